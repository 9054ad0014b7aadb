using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using OrleansMixtral.Cuda.Interop;

namespace OrleansMixtral.Cuda;

/// <summary>One kernel argument in an 8-byte slot: pointers, 64-bit integers, or 32-bit ints/floats in the low half. Built only by <see cref="Kernels"/>' typed launchers.</summary>
readonly struct KArg
{
    public readonly ulong Bits;
    KArg(ulong bits) => Bits = bits;
    public static implicit operator KArg(int v) => new((uint)v);
    public static implicit operator KArg(long v) => new((ulong)v);
    public static implicit operator KArg(ulong v) => new(v);
    public static implicit operator KArg(float v) => new(BitConverter.SingleToUInt32Bits(v));
    public static implicit operator KArg(DevicePtr p) => new(p.Address);
}

/// <summary>Device memory owned by the backend.</summary>
public sealed class DeviceBuffer : IDisposable
{
    internal DeviceBuffer(ulong ptr, long bytes) { Ptr = ptr; Bytes = bytes; }
    public ulong Ptr { get; private set; }
    public long Bytes { get; }
    public DevicePtr At(long byteOffset) => new(Ptr + (ulong)byteOffset);
    public void Dispose()
    {
        if (Ptr != 0) Cu.cuMemFree(Ptr);
        Ptr = 0;
    }
}

/// <summary>
/// The GPU: primary context, one stream, kernels compiled from kernels/*.cu with NVRTC for this device's
/// architecture (cubins cached on disk by source hash + arch + NVRTC version), memory, launches.
/// </summary>
public sealed unsafe class CudaDevice : IDisposable
{
    readonly IntPtr _context;
    readonly List<IntPtr> _modules = [];
    readonly Dictionary<string, IntPtr> _functions = new();

    CudaDevice(int ordinal)
    {
        Ordinal = ordinal;
        Cu.Check(Cu.cuDeviceGet(out var dev, ordinal));
        Cu.Check(Cu.cuDevicePrimaryCtxRetain(out _context, dev));
        Cu.Check(Cu.cuCtxSetCurrent(_context));
        t_current = _context;
        var name = stackalloc byte[256];
        Cu.Check(Cu.cuDeviceGetName(name, 256, dev));
        Name = Marshal.PtrToStringUTF8((IntPtr)name) ?? "GPU";
        Cu.Check(Cu.cuDeviceGetAttribute(out var major, Cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        Cu.Check(Cu.cuDeviceGetAttribute(out var minor, Cu.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
        Cu.Check(Cu.cuDeviceGetAttribute(out var sms, Cu.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
        ComputeCapability = major * 10 + minor;
        Multiprocessors = sms;
        Cu.Check(Cu.cuStreamCreate(out var stream, Cu.CU_STREAM_NON_BLOCKING));
        Stream = stream;
    }

    public int Ordinal { get; }
    public string Name { get; }
    public int ComputeCapability { get; }
    public int Multiprocessors { get; }
    public IntPtr Stream { get; }

    /// <summary>True when a CUDA driver and at least one device are present.</summary>
    public static bool IsAvailable(out string reason)
    {
        try
        {
            Native.Install();
            var r = Cu.cuInit(0);
            if (r != 0) { reason = $"cuInit returned {r}"; return false; }
            Cu.Check(Cu.cuDeviceGetCount(out var n));
            reason = n > 0 ? "" : "no CUDA device";
            return n > 0;
        }
        catch (DllNotFoundException) { reason = "libcuda.so.1 not found (no NVIDIA driver)"; return false; }
        catch (EntryPointNotFoundException e) { reason = e.Message; return false; }
    }

    /// <summary>
    /// The CUDA devices this process sees: those of <c>CUDA_VISIBLE_DEVICES</c> when it is set (the driver renumbers
    /// them from 0), else every one; 0 without a driver.
    /// </summary>
    public static int Count()
    {
        if (!IsAvailable(out _)) return 0;
        Cu.Check(Cu.cuDeviceGetCount(out var n));
        return n;
    }

    /// <summary>Throws <see cref="CudaDeviceNotFoundException"/> unless <paramref name="ordinal"/> names a device this process sees.</summary>
    public static void CheckOrdinal(int ordinal)
    {
        var count = Count();
        if (ordinal < 0 || ordinal >= count) throw new CudaDeviceNotFoundException(ordinal, count);
    }

    /// <exception cref="CudaException">No CUDA driver or device.</exception>
    /// <exception cref="CudaDeviceNotFoundException"><paramref name="ordinal"/> is not one of the devices this process sees.</exception>
    public static CudaDevice Open(int ordinal = 0)
    {
        if (!IsAvailable(out var reason)) throw new CudaException("CUDA is not available: " + reason);
        CheckOrdinal(ordinal);
        var device = new CudaDevice(ordinal);
        device.LoadKernels();
        return device;
    }

    public (long Free, long Total) MemoryInfo()
    {
        MakeCurrent();
        Cu.Check(Cu.cuMemGetInfo(out var free, out var total));
        return ((long)free, (long)total);
    }

    public DeviceBuffer Allocate(long bytes)
    {
        MakeCurrent();
        ulong p = 0;
        var (free, total) = MemoryInfo();
        var r = bytes > free ? 2 : Cu.cuMemAlloc(out p, (nuint)Math.Max(bytes, 16));
        if (r == 2) // CUDA_ERROR_OUT_OF_MEMORY
        {
            throw new CudaOutOfMemoryException($"out of GPU memory: asked for {bytes / 1e9:F2} GB, {free / 1e9:F2} GB free of {total / 1e9:F2} GB on {Name}");
        }
        Cu.Check(r, "cuMemAlloc");
        return new DeviceBuffer(p, bytes);
    }

    public void Upload<T>(DeviceBuffer dst, long byteOffset, ReadOnlySpan<T> src) where T : unmanaged
    {
        if (src.Length == 0) return;
        MakeCurrent();
        fixed (T* p = src)
        {
            Cu.Check(Cu.cuMemcpyHtoDAsync(dst.At(byteOffset).Address, p, (nuint)(src.Length * sizeof(T)), Stream));
            Synchronize(); // the host span may go away as soon as we return
        }
    }

    public void Download<T>(DeviceBuffer src, long byteOffset, Span<T> dst) where T : unmanaged
    {
        MakeCurrent();
        fixed (T* p = dst)
        {
            Cu.Check(Cu.cuMemcpyDtoHAsync(p, src.At(byteOffset).Address, (nuint)(dst.Length * sizeof(T)), Stream));
            Synchronize();
        }
    }

    public void Synchronize() => Cu.Check(Cu.cuStreamSynchronize(Stream));

    [ThreadStatic] static IntPtr t_current;

    /// <summary>Makes this device's context current on the calling thread (the engine's loop thread is not the loader's).</summary>
    public void MakeCurrent()
    {
        if (t_current == _context) return;
        Cu.Check(Cu.cuCtxSetCurrent(_context));
        t_current = _context;
    }

    /// <summary>One typed launcher per kernel of kernels/*.cu (the only way to launch one).</summary>
    public Kernels Kernels { get; private set; } = null!;

    /// <summary>The loaded kernel of that name, or zero where this card's build leaves it out (the sm_90a files off Hopper).</summary>
    internal IntPtr FunctionOrZero(string name) => _functions.GetValueOrDefault(name);

    /// <summary>Lets a kernel launch with more than 48 KB of dynamic shared memory (once, before any launch or capture).</summary>
    internal void AllowSharedMemory(KernelFunction kernel, int bytes) =>
        Cu.Check(Cu.cuFuncSetAttribute(kernel.Handle, Cu.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes), kernel.Name);

    /// <summary>Launches a kernel on the device's stream; arguments live on the stack (nothing allocates).</summary>
    internal void Launch(KernelFunction kernel, Grid grid, uint sharedBytes, ReadOnlySpan<KArg> args)
    {
        if (kernel.Handle == 0) throw new CudaException($"kernel {kernel.Name} is not built for this card (compute capability {ComputeCapability})");
        var values = stackalloc ulong[args.Length];
        var pointers = stackalloc void*[args.Length];
        for (var i = 0; i < args.Length; i++)
        {
            values[i] = args[i].Bits;
            pointers[i] = &values[i];
        }
        Cu.Check(Cu.cuLaunchKernel(kernel.Handle, grid.X, grid.Y, grid.Z, grid.Threads, 1, 1, sharedBytes, Stream, pointers, null), kernel.Name);
    }

    void LoadKernels()
    {
        // The kernels are embedded in this assembly; MIXTRAL_KERNELS_DIR points at a kernels/ folder to try
        // edited sources without rebuilding (kernel work on the GPU machine).
        var assembly = typeof(CudaDevice).Assembly;
        var overrideDir = Environment.GetEnvironmentVariable("MIXTRAL_KERNELS_DIR");
        var sources = !string.IsNullOrEmpty(overrideDir)
            ? Directory.GetFiles(overrideDir).Where(f => f.EndsWith(".cu") || f.EndsWith(".cuh")).ToDictionary(f => Path.GetFileName(f), File.ReadAllText)
            : assembly.GetManifestResourceNames().Where(n => n.StartsWith("kernels/")).ToDictionary(
                n => n["kernels/".Length..], n => new StreamReader(assembly.GetManifestResourceStream(n)!).ReadToEnd());
        var headers = sources.Where(s => s.Key.EndsWith(".cuh")).ToArray();
        Nvrtc.Check(Nvrtc.nvrtcVersion(out var major, out var minor));
        foreach (var (file, source) in sources.Where(s => s.Key.EndsWith(".cu")).OrderBy(s => s.Key))
        {
            // *_sm90a.cu use Hopper-only instructions (wgmma, setmaxnreg): built for sm_90a on Hopper, left out elsewhere
            var hopperOnly = file.EndsWith("_sm90a.cu");
            if (hopperOnly && ComputeCapability != 90) continue;
            var arch = hopperOnly ? "sm_90a" : $"sm_{ComputeCapability}";
            var cubin = CachedCubin(file, source, headers, arch, $"{major}.{minor}");
            fixed (byte* image = cubin)
            {
                Cu.Check(Cu.cuModuleLoadData(out var module, image));
                _modules.Add(module);
                foreach (var name in KernelNames(source))
                {
                    Cu.Check(Cu.cuModuleGetFunction(out var f, module, name), name);
                    _functions[name] = f;
                }
            }
        }
        Kernels = new Kernels(this);
    }

    /// <summary>The kernels a source file defines: extern "C" __global__ functions, also those a macro stamps out per size.</summary>
    public static IEnumerable<string> KernelNames(string source)
    {
        const System.Text.RegularExpressions.RegexOptions Lines = System.Text.RegularExpressions.RegexOptions.Multiline;
        // extern "C" __global__ void NAME(
        foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(source,
                     @"extern ""C"" __global__ void (?:__launch_bounds__\([^)]*\) )?(?!__launch_bounds__)(\w+)\("))
            yield return m.Groups[1].Value;
        // kernels stamped out by a macro, e.g. #define GEMV_KERNELS(NT) … void gemv_i8_nt##NT( …, used as GEMV_KERNELS(4)
        foreach (System.Text.RegularExpressions.Match d in System.Text.RegularExpressions.Regex.Matches(source,
                     @"^#define (\w+)\(([\w, ]+)\)((?:[^\n]*\\\n)*[^\n]*)", Lines))
        {
            var (macro, body) = (d.Groups[1].Value, d.Groups[3].Value);
            var parameters = d.Groups[2].Value.Split(',', StringSplitOptions.TrimEntries);
            var stems = System.Text.RegularExpressions.Regex.Matches(body, @"void (?:__launch_bounds__\([^)]*\) )?(\w+)##(\w+)\(")
                .Select(m => (Stem: m.Groups[1].Value, Parameter: Array.IndexOf(parameters, m.Groups[2].Value))).Where(s => s.Parameter >= 0).ToArray();
            foreach (System.Text.RegularExpressions.Match use in System.Text.RegularExpressions.Regex.Matches(source, $@"^{macro}\(([^)]*)\)\s*$", Lines))
            {
                var arguments = use.Groups[1].Value.Split(',', StringSplitOptions.TrimEntries);
                foreach (var (stem, parameter) in stems) yield return stem + arguments[parameter];
            }
        }
    }

    static byte[] CachedCubin(string file, string source, KeyValuePair<string, string>[] headers, string arch, string nvrtcVersion)
    {
        var key = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(
            string.Join("\0", new[] { file, source, arch, nvrtcVersion }.Concat(headers.SelectMany(h => new[] { h.Key, h.Value }))))))[..24];
        var dir = Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME")
                               ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "orleansmixtral", "cubin");
        var path = Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(file)}-{arch}-{key}.cubin");
        if (File.Exists(path)) return File.ReadAllBytes(path);
        var cubin = Compile(file, source, headers, arch);
        try
        {
            Directory.CreateDirectory(dir);
            var tmp = path + "." + Environment.ProcessId;
            File.WriteAllBytes(tmp, cubin);
            File.Move(tmp, path, overwrite: true);
        }
        catch (IOException) { } // a cache we cannot write only costs compile time
        catch (UnauthorizedAccessException) { }
        return cubin;
    }

    static byte[] Compile(string file, string source, KeyValuePair<string, string>[] headers, string arch)
    {
        var pins = new List<GCHandle>();
        byte* Utf8(string s)
        {
            var h = GCHandle.Alloc(Encoding.UTF8.GetBytes(s + "\0"), GCHandleType.Pinned);
            pins.Add(h);
            return (byte*)h.AddrOfPinnedObject();
        }
        try
        {
            var headerSrc = stackalloc byte*[Math.Max(1, headers.Length)];
            var headerNames = stackalloc byte*[Math.Max(1, headers.Length)];
            for (var i = 0; i < headers.Length; i++)
            {
                headerSrc[i] = Utf8(headers[i].Value);
                headerNames[i] = Utf8(headers[i].Key);
            }
            Nvrtc.Check(Nvrtc.nvrtcCreateProgram(out var prog, Utf8(source), Utf8(file), headers.Length, headerSrc, headerNames));
            try
            {
                string[] options = [$"--gpu-architecture={arch}", "--std=c++17", "-default-device", "-lineinfo"];
                var opts = stackalloc byte*[options.Length];
                for (var i = 0; i < options.Length; i++) opts[i] = Utf8(options[i]);
                var result = Nvrtc.nvrtcCompileProgram(prog, options.Length, opts);
                Nvrtc.Check(Nvrtc.nvrtcGetProgramLogSize(prog, out var logSize));
                var log = new byte[(int)logSize];
                fixed (byte* l = log) Nvrtc.Check(Nvrtc.nvrtcGetProgramLog(prog, l));
                if (result != 0) throw new CudaException($"NVRTC could not compile kernels/{file} for {arch}:\n{Encoding.UTF8.GetString(log).TrimEnd('\0')}");
                Nvrtc.Check(Nvrtc.nvrtcGetCUBINSize(prog, out var size));
                var cubin = new byte[(int)size];
                fixed (byte* c = cubin) Nvrtc.Check(Nvrtc.nvrtcGetCUBIN(prog, c));
                return cubin;
            }
            finally
            {
                Nvrtc.nvrtcDestroyProgram(ref prog);
            }
        }
        finally
        {
            foreach (var h in pins) h.Free();
        }
    }

    public void Dispose()
    {
        foreach (var m in _modules) Cu.cuModuleUnload(m);
        Cu.cuStreamDestroy(Stream);
        Cu.cuDevicePrimaryCtxRelease(Ordinal);
    }
}

public sealed class CudaOutOfMemoryException(string message) : Exception(message);

/// <summary>A device index that is not one of the CUDA devices this process sees (<c>CUDA_VISIBLE_DEVICES</c> renumbers them from 0).</summary>
public sealed class CudaDeviceNotFoundException(int ordinal, int count) : Exception(Describe(ordinal, count))
{
    public int Ordinal { get; } = ordinal;
    /// <summary>How many devices the process sees.</summary>
    public int DeviceCount { get; } = count;

    static string Describe(int ordinal, int count)
    {
        var seen = count switch { 0 => "no CUDA device", 1 => "one CUDA device (0)", _ => $"{count} CUDA devices (0 to {count - 1})" };
        var visible = Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") is { } v ? $" with CUDA_VISIBLE_DEVICES={v}, which numbers the devices it lists from 0" : "";
        return $"there is no CUDA device {ordinal}: this process sees {seen}{visible}";
    }
}
