using System.Reflection;
using System.Runtime.InteropServices;

namespace OrleansMixtral.Cuda.Interop;

/// <summary>
/// Finds the CUDA libraries: the driver as libcuda.so.1, NVRTC in CUDA's lib64 (13.x, else 12.x),
/// under $CUDA_PATH, /usr/local/cuda or the loader's search path.
/// </summary>
static class Native
{
    public const string Driver = "cuda";
    public const string Nvrtc = "nvrtc";

    static readonly Dictionary<string, string[]> Candidates = new()
    {
        [Driver] = ["libcuda.so.1", "libcuda.so"],
        [Nvrtc] = ["libnvrtc.so.13", "libnvrtc.so.12"],
    };

    static int _installed;

    public static void Install()
    {
        if (Interlocked.Exchange(ref _installed, 1) == 1) return;
        NativeLibrary.SetDllImportResolver(typeof(Native).Assembly, Resolve);
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (!Candidates.TryGetValue(name, out var files)) return IntPtr.Zero;
        var dirs = new List<string>();
        foreach (var root in new[] { Environment.GetEnvironmentVariable("CUDA_PATH"), "/usr/local/cuda" })
            if (!string.IsNullOrEmpty(root)) dirs.Add(Path.Combine(root, "lib64"));
        foreach (var file in files)
        {
            foreach (var dir in dirs)
                if (NativeLibrary.TryLoad(Path.Combine(dir, file), out var h)) return h;
            if (NativeLibrary.TryLoad(file, out var h2)) return h2;
        }
        return IntPtr.Zero;
    }
}

/// <summary>A CUDA or NVRTC call failed; the message carries the library's error name.</summary>
public sealed class CudaException(string message) : Exception(message);
