using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace OrleansMixtral.Cuda.Interop;

static unsafe partial class Nvrtc
{
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcVersion(out int major, out int minor);
    [LibraryImport(Native.Nvrtc)]
    public static partial int nvrtcCreateProgram(out IntPtr prog, byte* src, byte* name, int numHeaders, byte** headers, byte** includeNames);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcCompileProgram(IntPtr prog, int numOptions, byte** options);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcGetProgramLogSize(IntPtr prog, out nuint size);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcGetProgramLog(IntPtr prog, byte* log);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcGetCUBINSize(IntPtr prog, out nuint size);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcGetCUBIN(IntPtr prog, byte* cubin);
    [LibraryImport(Native.Nvrtc)] public static partial int nvrtcDestroyProgram(ref IntPtr prog);
    [LibraryImport(Native.Nvrtc)] public static partial byte* nvrtcGetErrorString(int result);

    public static void Check(int result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == 0) return;
        var at = call.IndexOf('(');
        throw new CudaException($"{Marshal.PtrToStringUTF8((IntPtr)nvrtcGetErrorString(result))} ({result}) from {(at > 0 ? call[..at] : call)}");
    }
}
