using System.Runtime.InteropServices;

namespace OnnxMoe.Runtime.Native;

/// <summary>Owns one native ORT object and releases it with the matching Release function, once.</summary>
internal abstract class OrtHandle : SafeHandle
{
    private readonly int _releaseSlot;

    protected OrtHandle(IntPtr handle, int releaseSlot) : base(IntPtr.Zero, ownsHandle: true)
    {
        _releaseSlot = releaseSlot;
        SetHandle(handle);
    }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        OrtApi.Release(_releaseSlot, handle);
        return true;
    }
}

/// <summary>Owns an OrtEnv (ReleaseEnv). The runtime keeps one for the whole process.</summary>
internal sealed class OrtEnvHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseEnv);

/// <summary>Owns an OrtSessionOptions (ReleaseSessionOptions); only needed until the session is created.</summary>
internal sealed class OrtSessionOptionsHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseSessionOptions);

/// <summary>Owns an OrtSession (ReleaseSession), held by <see cref="InferenceSession"/>.</summary>
internal sealed class OrtSessionHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseSession);

/// <summary>Owns an OrtValue (ReleaseValue), held by <see cref="OrtValue"/>.</summary>
internal sealed class OrtValueHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseValue);

/// <summary>Owns an OrtMemoryInfo (ReleaseMemoryInfo).</summary>
internal sealed class OrtMemoryInfoHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseMemoryInfo);

/// <summary>Owns an OrtTypeInfo (ReleaseTypeInfo); tensor info cast from it is borrowed and dies with it.</summary>
internal sealed class OrtTypeInfoHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseTypeInfo);

/// <summary>Owns an OrtTensorTypeAndShapeInfo returned by GetTensorTypeAndShape (ReleaseTensorTypeAndShapeInfo).</summary>
internal sealed class OrtTensorTypeAndShapeInfoHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseTensorTypeAndShapeInfo);

/// <summary>Owns an OrtRunOptions (ReleaseRunOptions), alive for one Run call.</summary>
internal sealed class OrtRunOptionsHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseRunOptions);

/// <summary>Owns an OrtCUDAProviderOptionsV2 (ReleaseCUDAProviderOptions); ORT copies it when appended.</summary>
internal sealed class OrtCudaProviderOptionsHandle(IntPtr h) : OrtHandle(h, Slot.ReleaseCUDAProviderOptions);
