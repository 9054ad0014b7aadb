using OrleansMixtral.Model;

namespace OrleansMixtral.Engine.Cpu;

/// <summary>
/// Reads tensors one at a time into the CPU backend's layout: fp32 arrays, or int8 rows + scales — taken as
/// stored from a pre-quantized checkpoint, or quantized while streaming from a bf16/fp16/fp32 one.
/// </summary>
sealed class WeightLoader(CheckpointDirectory checkpoint, CpuBackendOptions options, LoadProgress? progress)
{
    readonly long _total = checkpoint.TotalBytes;
    long _done;

    public long BytesHeld { get; private set; }

    public float[] Float(string name)
    {
        var info = checkpoint.Get(name);
        var data = new float[info.ElementCount];
        checkpoint.ReadAsFloat32(name, data);
        Report(info);
        BytesHeld += data.Length * sizeof(float);
        return data;
    }

    public Linear Linear(string name, int rows, int cols, bool? quantize = null)
    {
        var info = checkpoint.RequireTensor(name, rows, cols);
        Linear linear;
        if (info.DType == TensorDType.I8 && options.Weights == CpuWeightFormat.Int8 && quantize != false)
        {
            linear = new Int8Linear(checkpoint.GetInt8(name).ToArray(), checkpoint.GetScales(name).ToArray(), rows, cols);
        }
        else
        {
            var w = new float[(long)rows * cols];
            checkpoint.ReadAsFloat32(name, w); // dequantises an I8 tensor when fp32 weights are asked for
            linear = (quantize ?? options.Weights == CpuWeightFormat.Int8)
                ? Int8Linear.Quantize(w, rows, cols)
                : new Fp32Linear(w, rows, cols);
        }
        Report(info);
        BytesHeld += linear.WeightBytes;
        return linear;
    }

    void Report(TensorInfo info)
    {
        _done += info.ByteLength;
        progress?.Invoke(info.Name, Math.Min(_done, _total), _total);
    }
}
