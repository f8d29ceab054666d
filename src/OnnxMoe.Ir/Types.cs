namespace OnnxMoe.Ir;

/// <summary>One dimension of a shape: a fixed size, a symbolic name, or unknown (both null).</summary>
public sealed record Dim(long? Value = null, string? Param = null, string? Denotation = null)
{
    public static implicit operator Dim(long v) => new(v);
    public static implicit operator Dim(string p) => new(null, p);
    public override string ToString() => Value?.ToString() ?? Param ?? "?";
}

/// <summary>Type of a value (TypeProto). Records compare structurally.</summary>
public abstract record ValueType
{
    public string? Denotation { get; init; }
}

/// <summary>Tensor type; <see cref="Shape"/> null means unknown rank.</summary>
public sealed record TensorType(DataType ElementType, IReadOnlyList<Dim>? Shape) : ValueType
{
    public bool Equals(TensorType? other) => other is not null && ElementType == other.ElementType && Denotation == other.Denotation &&
        (Shape is null ? other.Shape is null : other.Shape is not null && Shape.SequenceEqual(other.Shape));
    public override int GetHashCode() => HashCode.Combine(ElementType, Shape?.Count);
    public override string ToString() => Shape is null ? $"{ElementType.Name()}[*]" : $"{ElementType.Name()}[{string.Join(",", Shape)}]";
}

public sealed record SparseTensorType(DataType ElementType, IReadOnlyList<Dim>? Shape) : ValueType
{
    public bool Equals(SparseTensorType? other) => other is not null && ElementType == other.ElementType && Denotation == other.Denotation &&
        (Shape is null ? other.Shape is null : other.Shape is not null && Shape.SequenceEqual(other.Shape));
    public override int GetHashCode() => HashCode.Combine(ElementType, Shape?.Count);
    public override string ToString() => $"sparse<{(Shape is null ? $"{ElementType.Name()}[*]" : $"{ElementType.Name()}[{string.Join(",", Shape)}]")}>";
}

public sealed record SequenceType(ValueType? ElementType) : ValueType
{
    public override string ToString() => $"seq<{ElementType}>";
}

public sealed record MapType(DataType KeyType, ValueType? ValueTypeOfMap) : ValueType
{
    public override string ToString() => $"map<{KeyType.Name()},{ValueTypeOfMap}>";
}

public sealed record OptionalType(ValueType? ElementType) : ValueType
{
    public override string ToString() => $"optional<{ElementType}>";
}

/// <summary>Opaque type (ONNX-ML TypeProto.Opaque): a type known only by domain and name.</summary>
public sealed record OpaqueType(string? Domain, string? Name) : ValueType
{
    public override string ToString() => $"opaque<{Domain}::{Name}>";
}

/// <summary>A TypeProto with no value case set (kept so round trips are exact).</summary>
public sealed record UnsetType : ValueType
{
    public override string ToString() => "?";
}
