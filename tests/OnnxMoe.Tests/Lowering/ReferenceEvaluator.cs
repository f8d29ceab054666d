using OnnxMoe.Ir;
using OnnxMoe.Ir.Tensors;

namespace OnnxMoe.Tests.Lowering;

/// <summary>
/// A deliberately plain ONNX interpreter (double precision, row-major arrays) for the operators the
/// decoder lowering emits. Test oracle independent of ORT: slow, but obviously correct per op.
/// </summary>
internal sealed class ReferenceEvaluator
{
    public sealed record Arr(long[] Shape, double[] Data, DataType Type)
    {
        public long Count => Data.LongLength;
    }

    public static Arr FromTensor(Tensor t) => t.DataType switch
    {
        DataType.Int64 => new Arr(t.Shape, t.GetSpan<long>().ToArray().Select(v => (double)v).ToArray(), DataType.Int64),
        DataType.Bool => new Arr(t.Shape, t.GetBytes().ToArray().Select(v => (double)v).ToArray(), DataType.Bool),
        _ => new Arr(t.Shape, t.ToFloatArray().Select(v => (double)v).ToArray(), t.DataType),
    };

    public static Dictionary<string, Arr> Run(Graph g, IReadOnlyDictionary<string, Arr> inputs)
    {
        var env = new Dictionary<Value, Arr>(ReferenceEqualityComparer.Instance);
        foreach (var v in g.Inputs) env[v] = inputs[v.Name];
        foreach (var v in g.Initializers) env[v] = FromTensor(v.ConstValue!);
        foreach (var n in g.Nodes)
        {
            var ins = n.Inputs.Select(v => v == null ? null : env[v]).ToArray();
            var outs = Eval(n, ins);
            for (int k = 0; k < outs.Length; k++) env[n.Outputs[k]] = outs[k];
        }
        return g.Outputs.ToDictionary(v => v.Name, v => env[v]);
    }

    private static long[] Strides(long[] shape)
    {
        var s = new long[shape.Length];
        long acc = 1;
        for (int i = shape.Length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
        return s;
    }

    private static long Size(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);

    private static long[] BroadcastShape(params long[][] shapes)
    {
        int rank = shapes.Max(s => s.Length);
        var r = new long[rank];
        for (int i = 0; i < rank; i++)
        {
            long d = 1;
            foreach (var s in shapes)
            {
                int j = i - (rank - s.Length);
                if (j < 0) continue;
                if (s[j] != 1) { if (d != 1 && d != s[j]) throw new InvalidOperationException("broadcast mismatch"); d = s[j]; }
            }
            r[i] = d;
        }
        return r;
    }

    /// <summary>Flat index into <paramref name="shape"/> for output multi-index (broadcast).</summary>
    private static long MapIndex(long[] outIdx, long[] shape)
    {
        long off = 0, stride = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            long d = shape[i];
            long idx = d == 1 ? 0 : outIdx[outIdx.Length - shape.Length + i];
            off += idx * stride;
            stride *= d;
        }
        return off;
    }

    private static IEnumerable<long[]> Indices(long[] shape)
    {
        long n = Size(shape);
        var idx = new long[shape.Length];
        for (long f = 0; f < n; f++)
        {
            long rem = f;
            for (int i = shape.Length - 1; i >= 0; i--) { idx[i] = rem % shape[i]; rem /= shape[i]; }
            yield return idx;
        }
    }

    private static Arr Map(Arr[] xs, DataType type, Func<double[], double> f)
    {
        var shape = BroadcastShape(xs.Select(x => x.Shape).ToArray());
        var data = new double[Size(shape)];
        long k = 0;
        var args = new double[xs.Length];
        foreach (var idx in Indices(shape))
        {
            for (int j = 0; j < xs.Length; j++) args[j] = xs[j].Data[MapIndex(idx, xs[j].Shape)];
            data[k++] = f(args);
        }
        return new Arr(shape, data, type);
    }

    private static Arr Unary(Arr x, Func<double, double> f) => x with { Data = x.Data.Select(f).ToArray() };

    private static long[] Ints(Arr a) => a.Data.Select(v => (long)v).ToArray();
    private static long Norm(long axis, int rank) => axis < 0 ? axis + rank : axis;

    private static Arr[] Eval(Node n, Arr?[] i)
    {
        Arr x = i.Length > 0 ? i[0]! : null!;
        switch (n.OpType)
        {
            case "Identity": return [x];
            case "Add": return [Map([x, i[1]!], x.Type, a => a[0] + a[1])];
            case "Sub": return [Map([x, i[1]!], x.Type, a => a[0] - a[1])];
            case "Mul": return [Map([x, i[1]!], x.Type, a => a[0] * a[1])];
            case "Div": return [Map([x, i[1]!], x.Type, a => x.Type == DataType.Int64 ? Math.Truncate(a[0] / a[1]) : a[0] / a[1])];
            case "Equal": return [Map([x, i[1]!], DataType.Bool, a => a[0] == a[1] ? 1 : 0)];
            case "LessOrEqual": return [Map([x, i[1]!], DataType.Bool, a => a[0] <= a[1] ? 1 : 0)];
            case "And": return [Map([x, i[1]!], DataType.Bool, a => a[0] != 0 && a[1] != 0 ? 1 : 0)];
            case "Where": return [Map([x, i[1]!, i[2]!], i[1]!.Type, a => a[0] != 0 ? a[1] : a[2])];
            case "Neg": return [Unary(x, v => -v)];
            case "Sqrt": return [Unary(x, Math.Sqrt)];
            case "Reciprocal": return [Unary(x, v => 1 / v)];
            case "Sigmoid": return [Unary(x, v => 1 / (1 + Math.Exp(-v)))];
            case "Cos": return [Unary(x, Math.Cos)];
            case "Sin": return [Unary(x, Math.Sin)];
            case "Clip": return [Unary(x, v => Math.Min(Math.Max(v, i.Length > 1 && i[1] != null ? i[1]!.Data[0] : double.MinValue), i.Length > 2 && i[2] != null ? i[2]!.Data[0] : double.MaxValue))];
            case "Cast":
                {
                    var to = (DataType)n.GetAttribute("to")!.AsInt();
                    var d = to switch
                    {
                        DataType.Bool => x.Data.Select(v => v != 0 ? 1.0 : 0).ToArray(),
                        DataType.Int64 => x.Data.Select(Math.Truncate).ToArray(),
                        DataType.Float => x.Data.Select(v => (double)(float)v).ToArray(),
                        DataType.Float16 => x.Data.Select(v => (double)(Half)v).ToArray(),
                        _ => throw new NotSupportedException($"Cast to {to}"),
                    };
                    return [new Arr(x.Shape, d, to)];
                }
            case "Shape":
                {
                    long r = x.Shape.Length;
                    long s = Norm(n.GetInt("start", 0), (int)r), e = n.GetAttribute("end") is { } ea ? Norm(ea.AsInt(), (int)r) : r;
                    s = Math.Clamp(s, 0, r); e = Math.Clamp(e, 0, r);
                    var dims = x.Shape[(int)s..(int)e];
                    return [new Arr([dims.Length], dims.Select(v => (double)v).ToArray(), DataType.Int64)];
                }
            case "Reshape":
                {
                    var target = Ints(i[1]!);
                    for (int k = 0; k < target.Length; k++) if (target[k] == 0) target[k] = x.Shape[k];
                    int inf = Array.IndexOf(target, -1L);
                    if (inf >= 0) target[inf] = x.Count / -target.Aggregate(1L, (a, b) => a * b);
                    if (Size(target) != x.Count) throw new InvalidOperationException($"{n.Name}: bad reshape");
                    return [x with { Shape = target }];
                }
            case "Unsqueeze":
                {
                    var axes = Ints(i[1]!);
                    int rank = x.Shape.Length + axes.Length;
                    var norm = axes.Select(a => Norm(a, rank)).ToHashSet();
                    var shape = new List<long>();
                    int src = 0;
                    for (int k = 0; k < rank; k++) shape.Add(norm.Contains(k) ? 1 : x.Shape[src++]);
                    return [x with { Shape = shape.ToArray() }];
                }
            case "Squeeze":
                {
                    var axes = Ints(i[1]!).Select(a => Norm(a, x.Shape.Length)).ToHashSet();
                    return [x with { Shape = x.Shape.Where((d, k) => !axes.Contains(k)).ToArray() }];
                }
            case "Transpose":
                {
                    var perm = n.GetAttribute("perm")!.AsInts();
                    var shape = perm.Select(p => x.Shape[p]).ToArray();
                    var inStrides = Strides(x.Shape);
                    var data = new double[x.Count];
                    long k = 0;
                    foreach (var idx in Indices(shape))
                    {
                        long off = 0;
                        for (int d = 0; d < perm.Length; d++) off += idx[d] * inStrides[perm[d]];
                        data[k++] = x.Data[off];
                    }
                    return [new Arr(shape, data, x.Type)];
                }
            case "Concat":
                {
                    var parts = i.Select(p => p!).ToArray();
                    int axis = (int)Norm(n.GetInt("axis", 0), x.Shape.Length);
                    var shape = (long[])x.Shape.Clone();
                    shape[axis] = parts.Sum(p => p.Shape[axis]);
                    long outer = Size(shape[..axis]);
                    var data = new List<double>();
                    for (long o = 0; o < outer; o++)
                        foreach (var p in parts)
                        {
                            long chunk = Size(p.Shape[axis..]);
                            data.AddRange(p.Data.Skip((int)(o * chunk)).Take((int)chunk));
                        }
                    return [new Arr(shape, data.ToArray(), x.Type)];
                }
            case "Split":
                {
                    int parts = (int)n.GetInt("num_outputs", 0);
                    int axis = (int)Norm(n.GetInt("axis", 0), x.Shape.Length);
                    long len = x.Shape[axis] / parts;
                    return Enumerable.Range(0, parts).Select(p => SliceAxis(x, axis, p * len, (p + 1) * len)).ToArray();
                }
            case "Gather":
                {
                    var idx = Ints(i[1]!);
                    int axis = (int)Norm(n.GetInt("axis", 0), x.Shape.Length);
                    long outer = Size(x.Shape[..axis]), inner = Size(x.Shape[(axis + 1)..]), dim = x.Shape[axis];
                    var shape = x.Shape[..axis].Concat(i[1]!.Shape).Concat(x.Shape[(axis + 1)..]).ToArray();
                    var data = new double[Size(shape)];
                    long k = 0;
                    for (long o = 0; o < outer; o++)
                        foreach (var j0 in idx)
                        {
                            long j = j0 < 0 ? j0 + dim : j0;
                            for (long q = 0; q < inner; q++) data[k++] = x.Data[(o * dim + j) * inner + q];
                        }
                    return [new Arr(shape, data, x.Type)];
                }
            case "Range":
                {
                    double s = x.Data[0], l = i[1]!.Data[0], d = i[2]!.Data[0];
                    long count = Math.Max(0, (long)Math.Ceiling((l - s) / d));
                    return [new Arr([count], Enumerable.Range(0, (int)count).Select(k => s + k * d).ToArray(), x.Type)];
                }
            case "Softmax":
                {
                    int axis = (int)Norm(n.GetInt("axis", -1), x.Shape.Length);
                    if (axis != x.Shape.Length - 1) throw new NotSupportedException("softmax on inner axis");
                    long m = x.Shape[^1];
                    var data = (double[])x.Data.Clone();
                    for (long r = 0; r < x.Count / m; r++)
                    {
                        var row = data.AsSpan((int)(r * m), (int)m);
                        double max = double.MinValue;
                        foreach (var v in row) max = Math.Max(max, v);
                        double sum = 0;
                        for (int k = 0; k < row.Length; k++) { row[k] = Math.Exp(row[k] - max); sum += row[k]; }
                        for (int k = 0; k < row.Length; k++) row[k] /= sum;
                    }
                    return [x with { Data = data }];
                }
            case "TopK":
                {
                    long k = (long)i[1]!.Data[0], m = x.Shape[^1];
                    long rows = x.Count / m;
                    var shape = (long[])x.Shape.Clone();
                    shape[^1] = k;
                    var vals = new double[rows * k];
                    var ids = new double[rows * k];
                    for (long r = 0; r < rows; r++)
                    {
                        var order = Enumerable.Range(0, (int)m).OrderByDescending(j => x.Data[r * m + j]).ThenBy(j => j).Take((int)k).ToArray();
                        for (int j = 0; j < k; j++) { vals[r * k + j] = x.Data[r * m + order[j]]; ids[r * k + j] = order[j]; }
                    }
                    return [new Arr(shape, vals, x.Type), new Arr(shape, ids, DataType.Int64)];
                }
            case "ReduceSum": return [Reduce(x, Ints(i[1]!), n.GetInt("keepdims", 1) == 1, 0, (a, b) => a + b, (s, c) => s)];
            case "ReduceMax": return [Reduce(x, Ints(i[1]!), n.GetInt("keepdims", 1) == 1, double.MinValue, Math.Max, (s, c) => s)];
            case "ReduceMean": return [Reduce(x, Ints(i[1]!), n.GetInt("keepdims", 1) == 1, 0, (a, b) => a + b, (s, c) => s / c)];
            case "NonZero":
                {
                    var hits = Indices(x.Shape).Select((idx, f) => (idx: (long[])idx.Clone(), f)).Where(p => x.Data[p.f] != 0).ToList();
                    var data = new double[x.Shape.Length * hits.Count];
                    for (int d = 0; d < x.Shape.Length; d++)
                        for (int h = 0; h < hits.Count; h++) data[d * hits.Count + h] = hits[h].idx[d];
                    return [new Arr([x.Shape.Length, hits.Count], data, DataType.Int64)];
                }
            case "ScatterND":
                {
                    if (n.GetAttribute("reduction")?.AsString() != "add") throw new NotSupportedException("ScatterND without add");
                    var data = (double[])x.Data.Clone();
                    var idx = i[1]!;
                    int q = idx.Shape.Length;
                    long depth = idx.Shape[^1];
                    long inner = Size(x.Shape[(int)depth..]);
                    var strides = Strides(x.Shape);
                    for (long u = 0; u < idx.Count / depth; u++)
                    {
                        long off = 0;
                        for (int d = 0; d < depth; d++) off += (long)idx.Data[u * depth + d] * strides[d];
                        for (long e = 0; e < inner; e++) data[off + e] += i[2]!.Data[u * inner + e];
                    }
                    return [x with { Data = data }];
                }
            case "ConstantOfShape":
                {
                    var t = FromTensor(n.GetAttribute("value")!.AsTensor());
                    var shape = Ints(x);
                    return [new Arr(shape, Enumerable.Repeat(t.Data[0], (int)Size(shape)).ToArray(), t.Type)];
                }
            case "MatMul":
                {
                    var b = i[1]!;
                    long M = x.Shape[^2], K = x.Shape[^1], N = b.Shape[^1];
                    if (b.Shape[^2] != K) throw new InvalidOperationException($"{n.Name}: matmul K mismatch {K} vs {b.Shape[^2]}");
                    var batch = BroadcastShape(x.Shape[..^2], b.Shape[..^2]);
                    var shape = batch.Concat(new[] { M, N }).ToArray();
                    var data = new double[Size(shape)];
                    long bi = 0;
                    foreach (var idx in Indices(batch))
                    {
                        long ao = MapIndex(idx, x.Shape[..^2]) * M * K, bo = MapIndex(idx, b.Shape[..^2]) * K * N;
                        for (long r = 0; r < M; r++)
                            for (long c = 0; c < N; c++)
                            {
                                double s = 0;
                                for (long k = 0; k < K; k++) s += x.Data[ao + r * K + k] * b.Data[bo + k * N + c];
                                data[bi * M * N + r * N + c] = s;
                            }
                        bi++;
                    }
                    return [new Arr(shape, data, x.Type)];
                }
            default: throw new NotSupportedException($"reference evaluator: op {n.OpType}");
        }
    }

    private static Arr SliceAxis(Arr x, int axis, long from, long to)
    {
        long outer = Size(x.Shape[..axis]), inner = Size(x.Shape[(axis + 1)..]), dim = x.Shape[axis];
        var shape = (long[])x.Shape.Clone();
        shape[axis] = to - from;
        var data = new List<double>();
        for (long o = 0; o < outer; o++)
            for (long j = from; j < to; j++)
                for (long q = 0; q < inner; q++) data.Add(x.Data[(o * dim + j) * inner + q]);
        return new Arr(shape, data.ToArray(), x.Type);
    }

    private static Arr Reduce(Arr x, long[] axes, bool keep, double init, Func<double, double, double> f, Func<double, long, double> finish)
    {
        var ax = axes.Select(a => (int)Norm(a, x.Shape.Length)).ToHashSet();
        var keptShape = x.Shape.Select((d, k) => ax.Contains(k) ? 1 : d).ToArray();
        var acc = Enumerable.Repeat(init, (int)Size(keptShape)).ToArray();
        long f0 = 0;
        foreach (var idx in Indices(x.Shape))
        {
            long o = 0;
            for (int d = 0; d < idx.Length; d++) o = o * keptShape[d] + (ax.Contains(d) ? 0 : idx[d]);
            acc[o] = f(acc[o], x.Data[f0++]);
        }
        long count = x.Count / Math.Max(1, acc.Length);
        var data = acc.Select(v => finish(v, count)).ToArray();
        var shape = keep ? keptShape : x.Shape.Where((d, k) => !ax.Contains(k)).ToArray();
        return new Arr(shape, data, x.Type);
    }
}
