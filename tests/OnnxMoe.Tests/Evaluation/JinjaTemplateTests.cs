using System.Text.Json;
using OnnxMoe.Inference.Evaluation.Tasks;

namespace OnnxMoe.Tests.Evaluation;

public class JinjaTemplateTests
{
    private static Dictionary<string, object?> Doc(string json)
    {
        using var d = JsonDocument.Parse(json);
        return DocValues.FromJsonObject(d.RootElement);
    }

    private static readonly Dictionary<string, object?> Arc = Doc("""
        {"id": "Mercury_1", "question": "Which is a metal?", "choices": {"text": ["wood", "iron", "glass"], "label": ["A", "B", "C"]},
         "answerKey": "B", "passage": "  Iron rusts.  ", "label": 1, "n": 2.5, "flag": true, "answer": "2", "quote": "it's"}
        """);

    [Theory]
    // As lm-eval's tasks write them (arc_easy, piqa, boolq, sciq, openbookqa, mmlu), with what Jinja renders.
    [InlineData("Question: {{question}}\nAnswer:", "Question: Which is a metal?\nAnswer:")]
    [InlineData("{{choices.text}}", "['wood', 'iron', 'glass']")]
    [InlineData("{{choices['label']}}", "['A', 'B', 'C']")]
    [InlineData("{{choices.label.index(answerKey)}}", "1")]
    [InlineData("{{ ['A','B','C'].index(answerKey) }}", "1")]
    [InlineData("{{choices.label.index(answerKey.lstrip())}}", "1")]
    [InlineData("{{passage | trim}}|{{passage.strip()}}|{{ question | lower }}", "Iron rusts.|Iron rusts.|which is a metal?")]
    [InlineData("{{ question | upper | replace('METAL', 'gas') }}", "WHICH IS A gas?")]
    [InlineData("{{[choices.text[0], choices.text[-1]]}}", "['wood', 'glass']")]
    [InlineData("{{ answer | int - 1 }}", "1")]
    [InlineData("{{label + 1}} {{n}} {{flag}} {{ none }}", "2 2.5 True None")]
    [InlineData("{{'yes' if flag else 'no'}}{% if label == 1 %}!{% else %}?{% endif %}", "yes!")]
    [InlineData("{% for t in choices.text %}{{loop_free}}{% endfor %}", null)]
    [InlineData("{% for t in choices.text %}[{{t}}]{% endfor %}", "[wood][iron][glass]")]
    [InlineData("{{ quote }} {{ [quote] }}", "it's [\"it's\"]")]
    [InlineData("{{question ~ ' ' ~ label}} {{ choices.text | length }} {{ choices.text | join(', ') }}", "Which is a metal? 1 3 wood, iron, glass")]
    [InlineData("  {{- question -}}  \n", "Which is a metal?")]
    [InlineData("{{ question.split(' ')[1] }} {{ question[:5] }}", "is Which")]
    [InlineData("{{ passage | regex_replace('\\\\s+', ' ') }}", " Iron rusts. ")]
    [InlineData("{# comment #}keep trailing newline\n", "keep trailing newline\n")]
    public void RendersLikeJinja(string template, string? expected)
    {
        var t = JinjaTemplate.Parse(template);
        if (expected is null)
        {
            var e = Assert.Throws<TemplateException>(() => t.Render(Arc));
            Assert.Contains("loop_free", e.Message);
            return;
        }
        Assert.Equal(expected, t.Render(Arc));
    }

    [Theory]
    [InlineData("{{ question", "never closed")]
    [InlineData("{{ question | shout }}", "unsupported filter 'shout'")]
    [InlineData("{{ missing }}", "'missing' is undefined")]
    [InlineData("{% macro x() %}{% endmacro %}", "unsupported statement")]
    [InlineData("{{ choices.text[7] }}", "out of range")]
    [InlineData("{% if flag %}open", "without {% endif %}")]
    public void UnsupportedOrBrokenTemplatesFailClearly(string template, string message)
    {
        var e = Record.Exception(() => JinjaTemplate.Parse(template).Render(Arc));
        Assert.IsType<TemplateException>(e);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void PythonReprAndLiteralEvalRoundTrip()
    {
        var values = new List<object?> { "a'b", "plain", "q\"uote", 3L, -1.5, true, null, new List<object?> { "x" } };
        var repr = DocValues.Repr(values);
        Assert.Equal("[\"a'b\", 'plain', 'q\"uote', 3, -1.5, True, None, ['x']]", repr);
        Assert.True(DocValues.PyEquals(values, DocValues.LiteralEval(repr)));
        Assert.Throws<FormatException>(() => DocValues.LiteralEval("[open("));
    }

    [Fact]
    public void PythonRandomMatchesCPython()
    {
        // python3 -c "import random; r=random.Random(1234); print(r.sample(range(100),5), r.sample(range(10),3), r.sample(range(1000),7), r.getrandbits(32))"
        var r = new PythonRandom(1234);
        Assert.Equal([99, 56, 14, 0, 11], r.Sample(Enumerable.Range(0, 100).ToList(), 5));
        Assert.Equal([9, 0, 1], r.Sample(Enumerable.Range(0, 10).ToList(), 3));
        Assert.Equal([100, 784, 363, 242, 17, 31, 807], r.Sample(Enumerable.Range(0, 1000).ToList(), 7));
        Assert.Equal(68034096u, r.GetRandBits(32));
    }
}
