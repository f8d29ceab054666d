using OnnxMoe.Ir;
using ValueType = OnnxMoe.Ir.ValueType;

namespace OnnxMoe.Onnx;

// Serialization hints: what the reader saw in the file beyond the IR's semantics (field presence,
// non-canonical spellings, the encoding of tensor data), so that the writer reproduces the file
// field by field. Each string is the field as written in the file (null when absent); the writer
// uses it only while the IR still holds the same value, so edits by passes always win.

internal enum TensorEncoding
{
    None, Raw, FloatData, Int32Data, StringData, Int64Data, DoubleData, UInt64Data, External,
}

internal sealed class TensorHint
{
    public TensorEncoding Encoding;
    public bool DataTypeAbsent;
    public bool NameAbsent;
    public int? DataLocation;
    public long? SegmentBegin, SegmentEnd;
    public bool HasSegment;
    public List<KeyValuePair<string, string>>? MetadataProps;
}

internal sealed class NodeHint
{
    public string? Name, OpType, Domain, Overload;
    public List<byte[]>? DeviceConfigurations;
}

internal sealed class AttributeHint
{
    public string? Name;
    public bool TypeAbsent;
    public bool ValueAbsent;
}

internal sealed class GraphHint
{
    public string? Name;
}

internal enum ValueInfoRole { Input, Output, ValueInfo }

/// <summary>The ValueInfoProto content of one appearance of a value.</summary>
internal sealed record ValueInfoData(string? Name, ValueType? Type, string? DocString, IReadOnlyList<KeyValuePair<string, string>>? MetadataProps)
{
    public bool SameAs(ValueInfoData o) =>
        Name == o.Name && Equals(Type, o.Type) && DocString == o.DocString && MetaEqual(MetadataProps, o.MetadataProps);

    private static bool MetaEqual(IReadOnlyList<KeyValuePair<string, string>>? a, IReadOnlyList<KeyValuePair<string, string>>? b) =>
        a is null ? b is null : b is not null && a.SequenceEqual(b);
}

internal sealed class ValueHint
{
    /// <summary>What the first appearance set on the value; overrides apply only while it is unchanged.</summary>
    public ValueInfoData? Primary;
    public Dictionary<ValueInfoRole, ValueInfoData>? Overrides;
}

internal sealed record OpsetRaw(string? Domain, bool VersionAbsent);

internal sealed class OpsetHints
{
    public readonly Dictionary<OpsetImport, OpsetRaw> Raw = new();
}

internal sealed class FunctionHint
{
    public string? Name, Domain, Overload;
    public OpsetHints Opsets = new();
}

internal sealed class ModelHint
{
    public bool IrVersionAbsent;
    public OpsetHints Opsets = new();
    public List<byte[]> TrainingInfo = new();
    public List<byte[]> Configuration = new();
}

internal static class HintText
{
    /// <summary>The string to write for an IR string field: the file's spelling while the IR value is unchanged, else the IR value (empty = absent).</summary>
    public static string? Choose(string irValue, bool hinted, string? original, Func<string?, string>? normalize = null)
    {
        if (hinted && (normalize != null ? normalize(original) : original ?? "") == irValue) return original;
        return irValue.Length > 0 ? irValue : null;
    }
}
