using OnnxMoe.Ir;

namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>A group file (`group:` + `task:` list, optional `aggregate_metric_list`), or a tag shared by task files.</summary>
public sealed record TaskGroup(string Name, string? YamlPath, IReadOnlyList<string> Members, bool Aggregate, bool WeightBySize);

/// <summary>What `--tasks` resolved to: the tasks in order (each once) and the groups that listed them.</summary>
public sealed record ResolvedTasks(IReadOnlyList<MultipleChoiceTask> Tasks, IReadOnlyList<TaskGroup> Groups);

/// <summary>
/// Finds tasks by name (the `task:` of every *.yaml under the search folders, as lm-eval's TaskManager indexes its
/// tasks folder and --include_path), by group or tag name, or by YAML path.
/// </summary>
public sealed class TaskCatalog
{
    private readonly Dictionary<string, string> _taskFiles = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _groupFiles = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _tags = new(StringComparer.Ordinal);

    public TaskCatalog(IEnumerable<string> searchFolders)
    {
        foreach (var folder in searchFolders.Where(Directory.Exists))
            foreach (var file in Directory.EnumerateFiles(folder, "*.y*ml", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                Dictionary<string, object?> yaml;
                try { yaml = TaskYaml.Load(file); }
                catch (UserErrorException) { continue; } // A broken file only matters when it is asked for.
                if (yaml.GetValueOrDefault("group") is string g && yaml.GetValueOrDefault("task") is List<object?>) _groupFiles.TryAdd(g, file);
                else if (yaml.GetValueOrDefault("task") is string t)
                {
                    _taskFiles.TryAdd(t, file);
                    foreach (var tag in Tags(yaml))
                    {
                        if (!_tags.TryGetValue(tag, out var list)) _tags[tag] = list = [];
                        list.Add(t);
                    }
                }
            }
    }

    public IReadOnlyCollection<string> TaskNames => _taskFiles.Keys;

    public IReadOnlyCollection<string> GroupNames => _groupFiles.Keys.Concat(_tags.Keys).ToList();

    private static IEnumerable<string> Tags(Dictionary<string, object?> yaml) => yaml.GetValueOrDefault("tag") switch
    {
        string s => [s],
        List<object?> l => l.OfType<string>(),
        _ => [],
    };

    /// <summary>Resolves comma-separated names or YAML paths into tasks (loaded and checked) and groups.</summary>
    public ResolvedTasks Resolve(IEnumerable<string> specs)
    {
        var tasks = new List<MultipleChoiceTask>();
        var groups = new List<TaskGroup>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var spec in specs.SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
            Add(spec, tasks, groups, seen, depth: 0);
        if (tasks.Count == 0) throw new UserErrorException("--tasks names no task");
        return new ResolvedTasks(tasks, groups);
    }

    private void Add(string spec, List<MultipleChoiceTask> tasks, List<TaskGroup> groups, HashSet<string> seen, int depth)
    {
        if (depth > 8) throw new UserErrorException($"task group nesting too deep at '{spec}'");
        bool isPath = spec.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || spec.EndsWith(".yml", StringComparison.OrdinalIgnoreCase);
        string? file = isPath ? spec : _taskFiles.GetValueOrDefault(spec) ?? _groupFiles.GetValueOrDefault(spec);
        if (file is null)
        {
            if (_tags.TryGetValue(spec, out var members))
            {
                groups.Add(new TaskGroup(spec, null, members, Aggregate: false, WeightBySize: false));
                foreach (var m in members) Add(m, tasks, groups, seen, depth + 1);
                return;
            }
            var known = string.Join(", ", _taskFiles.Keys.Concat(_groupFiles.Keys).Concat(_tags.Keys).Order(StringComparer.Ordinal));
            throw new UserErrorException($"unknown task '{spec}' (known: {(known.Length > 0 ? known : "none")}; or give a task.yaml path)");
        }
        if (!File.Exists(file)) throw new UserErrorException($"{file}: task file not found");
        var yaml = TaskYaml.Load(file);
        if (yaml.GetValueOrDefault("group") is string groupName && yaml.GetValueOrDefault("task") is List<object?> list)
        {
            var members = new List<string>();
            var dir = Path.GetDirectoryName(Path.GetFullPath(file))!;
            foreach (var item in list)
            {
                if (item is not string name) throw new UserErrorException($"{file}: group members must be task names or YAML paths (inline task configs are not supported)");
                bool memberIsPath = name.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".yml", StringComparison.OrdinalIgnoreCase);
                var resolved = memberIsPath && !Path.IsPathRooted(name) ? Path.Combine(dir, name) : name;
                members.Add(resolved);
            }
            bool aggregate = false, weight = true;
            if (yaml.GetValueOrDefault("aggregate_metric_list") is List<object?> aggs)
            {
                aggregate = aggs.Count > 0;
                foreach (var a in aggs.OfType<Dictionary<string, object?>>())
                    if (a.GetValueOrDefault("weight_by_size") is bool w) weight = w;
            }
            var expanded = new List<string>();
            foreach (var m in members)
            {
                int before = tasks.Count;
                Add(m, tasks, groups, seen, depth + 1);
                expanded.AddRange(tasks.Skip(before).Select(t => t.Name));
                if (tasks.Count == before) expanded.AddRange(ResolveNamesOnly(m));
            }
            groups.Add(new TaskGroup(groupName, file, expanded, aggregate, weight));
            return;
        }
        var task = new MultipleChoiceTask(file, yaml);
        if (seen.Add(task.Name)) tasks.Add(task);
    }

    // A member already added earlier still belongs to this group.
    private IEnumerable<string> ResolveNamesOnly(string member)
    {
        if (member.EndsWith(".yaml", StringComparison.OrdinalIgnoreCase) || member.EndsWith(".yml", StringComparison.OrdinalIgnoreCase))
            return TaskYaml.Load(member).GetValueOrDefault("task") is string t ? [t] : [];
        return _taskFiles.ContainsKey(member) ? [member] : [];
    }
}
