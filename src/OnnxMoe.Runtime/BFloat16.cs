namespace OnnxMoe.Runtime;

/// <summary>bfloat16: the upper 16 bits of an IEEE float32. Conversion from float rounds to nearest even;
/// NaN stays NaN. Same layout as ONNX's raw bf16, so spans of it can back bf16 tensors.</summary>
public readonly record struct BFloat16(ushort Bits)
{
    public static explicit operator BFloat16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return new BFloat16((ushort)((bits >> 16) | 0x0040)); // keep sign, force a quiet NaN
        uint roundingBias = 0x7FFF + ((bits >> 16) & 1);
        return new BFloat16((ushort)((bits + roundingBias) >> 16));
    }

    public static explicit operator float(BFloat16 value) => BitConverter.UInt32BitsToSingle((uint)value.Bits << 16);

    public override string ToString() => ((float)this).ToString(System.Globalization.CultureInfo.InvariantCulture);
}
