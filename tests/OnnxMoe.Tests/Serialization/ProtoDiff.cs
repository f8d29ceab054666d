using System.Collections;
using Google.Protobuf;

namespace OnnxMoe.Tests.Serialization;

/// <summary>
/// Field-by-field protobuf comparison that, unlike the generated Equals, also compares field
/// presence (an explicitly written empty string or zero differs from an absent field) and compares
/// floats bitwise. Returns the path of the first difference, or null when equal.
/// </summary>
internal static class ProtoDiff
{
    public static string? FirstDifference(IMessage a, IMessage b, string path = "")
    {
        var fields = a.Descriptor.Fields.InFieldNumberOrder();
        foreach (var f in fields)
        {
            string p = $"{path}/{f.Name}";
            var acc = f.Accessor;
            if (f.IsRepeated)
            {
                var la = (IList)acc.GetValue(a);
                var lb = (IList)acc.GetValue(b);
                if (la.Count != lb.Count) return $"{p}: {la.Count} vs {lb.Count} entries";
                for (int i = 0; i < la.Count; i++)
                    if (Compare(la[i], lb[i], $"{p}[{i}]") is { } d) return d;
                continue;
            }
            bool ha = f.HasPresence ? acc.HasValue(a) : true;
            bool hb = f.HasPresence ? acc.HasValue(b) : true;
            if (ha != hb) return $"{p}: present {ha} vs {hb}" + (ha ? $" ({Show(acc.GetValue(a))})" : $" ({Show(acc.GetValue(b))})");
            if (!ha) continue;
            if (Compare(acc.GetValue(a), acc.GetValue(b), p) is { } diff) return diff;
        }
        return null;
    }

    private static string Show(object? o) => o switch
    {
        ByteString bs => $"bytes[{bs.Length}]",
        IMessage m => m.Descriptor.Name,
        _ => $"'{o}'",
    };

    private static string? Compare(object? x, object? y, string path)
    {
        switch (x)
        {
            case IMessage mx: return FirstDifference(mx, (IMessage)y!, path);
            case float fx: return BitConverter.SingleToInt32Bits(fx) == BitConverter.SingleToInt32Bits((float)y!) ? null : $"{path}: {fx:R} vs {y:R}";
            case double dx: return BitConverter.DoubleToInt64Bits(dx) == BitConverter.DoubleToInt64Bits((double)y!) ? null : $"{path}: {dx:R} vs {y:R}";
            case ByteString bx: return bx.Span.SequenceEqual(((ByteString)y!).Span) ? null : $"{path}: bytes differ ({bx.Length} vs {((ByteString)y!).Length})";
            default: return Equals(x, y) ? null : $"{path}: '{x}' vs '{y}'";
        }
    }
}
