using Google.Protobuf;
using Google.Protobuf.Reflection;
using OnnxMoe.Ir;
using OnnxMoe.Onnx;
using OnnxMoe.Onnx.Proto;

namespace OnnxMoe.Tests.Serialization;

/// <summary>
/// Normalises what external data legitimately changes: initializer tensors whose bytes went to a
/// data file come back as raw bytes (typed fields become raw_data) and lose an explicit
/// data_location = DEFAULT. Applied to both sides before comparing the external-data round trip.
/// </summary>
internal static class TensorCanon
{
    public static void CanonicalizeExternalized(IMessage m)
    {
        if (m is GraphProto g)
            foreach (var t in g.Initializer) Canon(t);
        foreach (var f in m.Descriptor.Fields.InFieldNumberOrder())
        {
            if (f.FieldType != FieldType.Message) continue;
            var v = f.Accessor.GetValue(m);
            if (f.IsRepeated) { foreach (var item in (System.Collections.IList)v) CanonicalizeExternalized((IMessage)item); }
            else if (v is IMessage child && (!f.HasPresence || f.Accessor.HasValue(m))) CanonicalizeExternalized(child);
        }
    }

    private static void Canon(TensorProto t)
    {
        var dtype = (DataType)t.DataType;
        if (dtype == DataType.String || dtype.BitWidth() == 0) return;
        var field = TensorCodec.FieldInUse(t);
        long elements = t.Dims.Aggregate(1L, (a, d) => a * d);
        if (dtype.ByteCount(elements) == 0) return; // stays embedded (threshold 1 byte)
        if (field is not (TensorEncoding.Raw or TensorEncoding.None))
        {
            var raw = TensorCodec.Decode(t, field, dtype);
            t.FloatData.Clear(); t.Int32Data.Clear(); t.Int64Data.Clear(); t.DoubleData.Clear(); t.Uint64Data.Clear();
            t.RawData = ByteString.CopyFrom(raw);
        }
        if (t.HasDataLocation && t.DataLocation == 0) t.ClearDataLocation();
    }
}
