using System.Diagnostics;
using OrleansMixtral.Backends;
using OrleansMixtral.Cuda;
using OrleansMixtral.Cuda.Interop;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Cluster.Tests;

/// <summary>
/// GPU selection per silo (<c>--Mixtral:Device N</c>) as far as a machine without a GPU can check it: a GPU index that
/// cannot be honoured is one typed error, from the loader and from the silo host before anything loads. (With a GPU:
/// tests/OrleansMixtral.Cuda.Tests, DeviceSelectionTests.)
/// </summary>
public sealed class DeviceSelectionTests(ITestOutputHelper output)
{
    static void RequireNoGpu()
    {
        if (CudaDevice.Count() > 0) Assert.Skip("this machine has a GPU: these are the checks of a machine without one");
    }

    [Fact]
    public void The_device_must_be_0_for_a_model_on_the_cpu()
    {
        ModelLoader.CheckDevice(BackendKind.Cpu, 0);
        var asked = Assert.Throws<BackendUnavailableException>(() => ModelLoader.CheckDevice(BackendKind.Cpu, 1));
        Assert.Equal("device 1 is the index of a GPU, but the model runs on the CPU (the cpu backend was asked for); leave the device at 0", asked.Message);

        RequireNoGpu();
        ModelLoader.CheckDevice(BackendKind.Auto, 0);
        var auto = Assert.Throws<BackendUnavailableException>(() => ModelLoader.CheckDevice(BackendKind.Auto, 2));
        Assert.StartsWith("device 2 is the index of a GPU, but the model runs on the CPU (no CUDA device here: ", auto.Message);
    }

    [Fact]
    public void Without_a_gpu_the_cuda_backend_and_any_device_are_refused_before_loading()
    {
        RequireNoGpu();
        Assert.Equal(0, CudaDevice.Count());
        var cuda = Assert.Throws<BackendUnavailableException>(() => ModelLoader.CheckDevice(BackendKind.Cuda, 1));
        Assert.StartsWith("the cuda backend cannot start here: ", cuda.Message);
        Assert.Throws<CudaDeviceNotFoundException>(() => CudaDevice.CheckOrdinal(0));
        Assert.StartsWith("CUDA is not available: ", Assert.Throws<CudaException>(() => CudaDevice.Open(1)).Message);

        // the loader checks before it reads a weight
        var started = Stopwatch.StartNew();
        Assert.Throws<BackendUnavailableException>(() => ModelLoader.Load(RepoPaths.TinyModel, new ModelLoadOptions { Backend = BackendKind.Cpu, Device = 1 }));
        using var loaded = ModelLoader.Load(RepoPaths.TinyModel, new ModelLoadOptions { Backend = BackendKind.Cpu, CpuKvCacheBytes = 4 << 20 });
        Assert.Equal(ComputeDevice.Cpu, loaded.Device);
        Assert.Null(loaded.Device.Index);
        Assert.Equal("the CPU", loaded.Device.ToString());
        output.WriteLine($"refused in {started.ElapsedMilliseconds} ms, then loaded on {loaded.Device}");
    }

    [Fact]
    public void A_device_past_the_visible_ones_names_how_many_there_are()
    {
        Assert.Equal("there is no CUDA device 2: this process sees 2 CUDA devices (0 to 1)" + VisibleNote(),
            new CudaDeviceNotFoundException(2, 2).Message);
        Assert.Equal("there is no CUDA device 1: this process sees one CUDA device (0)" + VisibleNote(), new CudaDeviceNotFoundException(1, 1).Message);
        Assert.Equal("there is no CUDA device 0: this process sees no CUDA device" + VisibleNote(), new CudaDeviceNotFoundException(0, 0).Message);
        var e = new CudaDeviceNotFoundException(-1, 8);
        Assert.Equal((-1, 8), (e.Ordinal, e.DeviceCount));
        Assert.Equal(-1, Assert.Throws<CudaDeviceNotFoundException>(() => ModelLoader.CheckDevice(BackendKind.Cpu, -1)).Ordinal);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_synthetic_model_is_a_name_the_silo_takes_and_needs_a_gpu_for()
    {
        // It is no directory to resolve (the silo refused it as one, exit 2): it gets as far as the load, which here says
        // in one line that it needs a GPU.
        RequireNoGpu();
        var siloPort = RedisServer.FreePort();
        await using var silo = SiloProcess.Start(["--Model", "synthetic:mixtral-8x7b", "--PrimarySiloPort", $"{siloPort}",
            "--DataDirectory", Path.Combine(Path.GetTempPath(), "mixtral-synthetic-" + Guid.NewGuid().ToString("N")[..8])], siloPort, RedisServer.FreePort());
        Assert.Equal(1, await silo.Exited(TimeSpan.FromSeconds(30)));
        output.WriteLine(silo.Log);
        Assert.DoesNotContain("model directory not found", silo.Log);
        Assert.Contains("error: the silo could not start: synthetic models are generated on the GPU; no CUDA device here", silo.Log);
    }

    static string VisibleNote() => Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") is { } v
        ? $" with CUDA_VISIBLE_DEVICES={v}, which numbers the devices it lists from 0" : "";

    [Theory(Timeout = 60_000)]
    [InlineData("1", "error: --Mixtral:Device 1: device 1 is the index of a GPU, but the model runs on the CPU (the cpu backend was asked for); leave the device at 0")]
    [InlineData("-1", "error: --Mixtral:Device -1: there is no CUDA device -1: this process sees no CUDA device")]
    [InlineData("one", "error: Failed to convert configuration value 'one' at 'Mixtral:Device' to type 'System.Int32'.")]
    public async Task The_silo_refuses_a_device_it_cannot_use_in_one_line_and_exit_2_before_the_model_loads(string device, string expected)
    {
        var siloPort = RedisServer.FreePort();
        await using var silo = SiloProcess.Start(["--Model", "models/tiny-mixtral", "--Backend", "cpu", "--Mixtral:Device", device, "--PrimarySiloPort", $"{siloPort}",
            "--DataDirectory", Path.Combine(Path.GetTempPath(), "mixtral-device-" + Guid.NewGuid().ToString("N")[..8])], siloPort, RedisServer.FreePort());
        Assert.Equal(2, await silo.Exited(TimeSpan.FromSeconds(30)));
        output.WriteLine(silo.Log);
        Assert.StartsWith(expected, Assert.Single(silo.Log.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)));
    }
}
