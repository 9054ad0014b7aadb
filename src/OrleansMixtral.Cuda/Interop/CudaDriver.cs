using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace OrleansMixtral.Cuda.Interop;

/// <summary>The slice of the CUDA driver API the backend uses. Every call goes through <see cref="Check"/>.</summary>
static unsafe partial class Cu
{
    public const int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    public const int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
    public const int CU_STREAM_NON_BLOCKING = 1;
    public const int CU_STREAM_CAPTURE_MODE_RELAXED = 2;
    public const int CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

    [LibraryImport(Native.Driver)] public static partial int cuInit(uint flags);
    [LibraryImport(Native.Driver)] public static partial int cuDriverGetVersion(out int version);
    [LibraryImport(Native.Driver)] public static partial int cuDeviceGetCount(out int count);
    [LibraryImport(Native.Driver)] public static partial int cuDeviceGet(out int device, int ordinal);
    [LibraryImport(Native.Driver)] public static partial int cuDeviceGetName(byte* name, int len, int device);
    [LibraryImport(Native.Driver)] public static partial int cuDeviceGetAttribute(out int value, int attribute, int device);
    [LibraryImport(Native.Driver, EntryPoint = "cuDeviceTotalMem_v2")] public static partial int cuDeviceTotalMem(out nuint bytes, int device);
    [LibraryImport(Native.Driver)] public static partial int cuDevicePrimaryCtxRetain(out IntPtr ctx, int device);
    [LibraryImport(Native.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")] public static partial int cuDevicePrimaryCtxRelease(int device);
    [LibraryImport(Native.Driver)] public static partial int cuCtxSetCurrent(IntPtr ctx);
    [LibraryImport(Native.Driver)] public static partial int cuCtxSynchronize();
    [LibraryImport(Native.Driver, EntryPoint = "cuMemGetInfo_v2")] public static partial int cuMemGetInfo(out nuint free, out nuint total);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemAlloc_v2")] public static partial int cuMemAlloc(out ulong ptr, nuint bytes);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemFree_v2")] public static partial int cuMemFree(ulong ptr);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemAllocHost_v2")] public static partial int cuMemAllocHost(out IntPtr ptr, nuint bytes);
    [LibraryImport(Native.Driver)] public static partial int cuMemFreeHost(IntPtr ptr);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemcpyHtoDAsync_v2")] public static partial int cuMemcpyHtoDAsync(ulong dst, void* src, nuint bytes, IntPtr stream);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemcpyDtoHAsync_v2")] public static partial int cuMemcpyDtoHAsync(void* dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemcpyDtoDAsync_v2")] public static partial int cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, IntPtr stream);
    [LibraryImport(Native.Driver, EntryPoint = "cuMemsetD8Async")] public static partial int cuMemsetD8Async(ulong dst, byte value, nuint count, IntPtr stream);
    [LibraryImport(Native.Driver)] public static partial int cuStreamCreate(out IntPtr stream, uint flags);
    [LibraryImport(Native.Driver, EntryPoint = "cuStreamDestroy_v2")] public static partial int cuStreamDestroy(IntPtr stream);
    [LibraryImport(Native.Driver)] public static partial int cuStreamSynchronize(IntPtr stream);
    [LibraryImport(Native.Driver)] public static partial int cuEventCreate(out IntPtr ev, uint flags);
    [LibraryImport(Native.Driver, EntryPoint = "cuEventDestroy_v2")] public static partial int cuEventDestroy(IntPtr ev);
    [LibraryImport(Native.Driver)] public static partial int cuEventRecord(IntPtr ev, IntPtr stream);
    [LibraryImport(Native.Driver)] public static partial int cuEventSynchronize(IntPtr ev);
    [LibraryImport(Native.Driver)] public static partial int cuEventElapsedTime(out float ms, IntPtr start, IntPtr end);
    [LibraryImport(Native.Driver)] public static partial int cuModuleLoadData(out IntPtr module, void* image);
    [LibraryImport(Native.Driver)] public static partial int cuModuleUnload(IntPtr module);
    [LibraryImport(Native.Driver, StringMarshalling = StringMarshalling.Utf8)] public static partial int cuModuleGetFunction(out IntPtr function, IntPtr module, string name);
    [LibraryImport(Native.Driver)]
    public static partial int cuLaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz, uint sharedBytes, IntPtr stream, void** args, void** extra);
    [LibraryImport(Native.Driver)] public static partial int cuFuncSetAttribute(IntPtr f, int attribute, int value);
    [LibraryImport(Native.Driver, EntryPoint = "cuStreamBeginCapture_v2")] public static partial int cuStreamBeginCapture(IntPtr stream, int mode);
    [LibraryImport(Native.Driver)] public static partial int cuStreamEndCapture(IntPtr stream, out IntPtr graph);
    [LibraryImport(Native.Driver)] public static partial int cuGraphInstantiateWithFlags(out IntPtr exec, IntPtr graph, ulong flags);
    [LibraryImport(Native.Driver)] public static partial int cuGraphLaunch(IntPtr exec, IntPtr stream);
    [LibraryImport(Native.Driver)] public static partial int cuGraphExecDestroy(IntPtr exec);
    [LibraryImport(Native.Driver)] public static partial int cuGraphDestroy(IntPtr graph);
    [LibraryImport(Native.Driver)] public static partial int cuGetErrorName(int error, out byte* name);

    public static void Check(int result, [CallerArgumentExpression(nameof(result))] string call = "")
    {
        if (result == 0) return;
        var name = "CUDA_ERROR_" + result;
        try
        {
            if (cuGetErrorName(result, out var p) == 0 && p != null) name = Marshal.PtrToStringUTF8((IntPtr)p) ?? name;
        }
        catch (DllNotFoundException) { }
        var at = call.IndexOf('(');
        throw new CudaException($"{name} ({result}) from {(at > 0 ? call[..at] : call)}");
    }
}
