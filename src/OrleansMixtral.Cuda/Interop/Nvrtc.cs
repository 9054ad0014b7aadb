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

static unsafe partial class Cublas
{
    public const int CUBLAS_OP_N = 0, CUBLAS_OP_T = 1;
    public const int CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14;
    public const int CUBLAS_COMPUTE_32F = 68;
    public const int CUBLAS_GEMM_DEFAULT = -1;

    [LibraryImport(Native.Cublas, EntryPoint = "cublasCreate_v2")] public static partial int cublasCreate(out IntPtr handle);
    [LibraryImport(Native.Cublas, EntryPoint = "cublasDestroy_v2")] public static partial int cublasDestroy(IntPtr handle);
    [LibraryImport(Native.Cublas, EntryPoint = "cublasSetStream_v2")] public static partial int cublasSetStream(IntPtr handle, IntPtr stream);
    [LibraryImport(Native.Cublas)]
    public static partial int cublasGemmEx(IntPtr handle, int transa, int transb, int m, int n, int k, float* alpha,
        ulong a, int aType, int lda, ulong b, int bType, int ldb, float* beta, ulong c, int cType, int ldc, int computeType, int algo);

    public static void Check(int result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == 0) return;
        var names = new Dictionary<int, string> { [1] = "CUBLAS_STATUS_NOT_INITIALIZED", [3] = "CUBLAS_STATUS_ALLOC_FAILED",
            [7] = "CUBLAS_STATUS_INVALID_VALUE", [8] = "CUBLAS_STATUS_ARCH_MISMATCH", [13] = "CUBLAS_STATUS_EXECUTION_FAILED",
            [14] = "CUBLAS_STATUS_INTERNAL_ERROR", [15] = "CUBLAS_STATUS_NOT_SUPPORTED" };
        var at = call.IndexOf('(');
        throw new CudaException($"{names.GetValueOrDefault(result, "CUBLAS_STATUS_" + result)} ({result}) from {(at > 0 ? call[..at] : call)}");
    }
}
