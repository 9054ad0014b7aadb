namespace OrleansMixtral.Cuda.Tests;

/// <summary>
/// GPU selection (a silo's <c>--Mixtral:Device N</c> reaches <see cref="CudaDevice.Open"/>): the last device this process
/// sees opens under its own index; one past it, or a negative index, is <see cref="CudaDeviceNotFoundException"/> with
/// the count. Skipped without a GPU (the CPU side: tests/OrleansMixtral.Cluster.Tests, DeviceSelectionTests).
/// </summary>
[Collection("gpu")]
public sealed class DeviceSelectionTests
{
    static int RequireGpu()
    {
        if (!CudaDevice.IsAvailable(out var why)) Assert.Skip("no CUDA device: " + why);
        return CudaDevice.Count();
    }

    [Fact]
    public void An_index_past_the_visible_devices_is_a_typed_error_with_their_count()
    {
        var count = RequireGpu();
        var past = Assert.Throws<CudaDeviceNotFoundException>(() => CudaDevice.Open(count));
        Assert.Equal((count, count), (past.Ordinal, past.DeviceCount));
        Assert.StartsWith($"there is no CUDA device {count}: this process sees ", past.Message);
        Assert.Equal(-1, Assert.Throws<CudaDeviceNotFoundException>(() => CudaDevice.Open(-1)).Ordinal);
    }

    [Fact]
    public void The_last_visible_device_opens_under_its_index()
    {
        var last = RequireGpu() - 1;
        using var device = CudaDevice.Open(last);
        Assert.Equal(last, device.Ordinal);
        Assert.False(string.IsNullOrWhiteSpace(device.Name));
        Assert.True(device.MemoryInfo().Total > 0);
    }
}
