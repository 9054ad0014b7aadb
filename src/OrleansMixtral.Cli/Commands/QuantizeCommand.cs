using System.CommandLine;
using System.Diagnostics;
using OrleansMixtral.Model;

namespace OrleansMixtral.Cli.Commands;

/// <summary><c>mixtral quantize SRC DST</c>: writes a pre-quantized int8 weight-only checkpoint, tensor by tensor.</summary>
static class QuantizeCommand
{
    public static Command Create(CliConsole console)
    {
        var command = new Command("quantize", "Write an int8 weight-only (per output channel) copy of a bf16/fp16/fp32 checkpoint");
        var source = new Argument<DirectoryInfo>("SRC") { Description = "Source model directory" };
        var destination = new Argument<DirectoryInfo>("DST") { Description = "Destination directory (created; must hold no weights yet)" };
        var embeddings = new Option<bool>("--quantize-embeddings") { Description = "Also store the embedding table as int8" };
        var lmHead = new Option<bool>("--quantize-lm-head") { Description = "Also store lm_head as int8" };
        var shardMb = new Option<long>("--max-shard-mb") { Description = "Largest shard file, in MB", DefaultValueFactory = _ => 2000, HelpName = "MB" };
        shardMb.Validators.Add(r =>
        {
            if (Opt.TryGet(r, out long mb) && mb < 1) r.AddError("--max-shard-mb must be at least 1");
        });
        command.Arguments.Add(source);
        command.Arguments.Add(destination);
        command.Options.Add(embeddings);
        command.Options.Add(lmHead);
        command.Options.Add(shardMb);

        command.SetAction(r =>
        {
            string src = r.GetRequiredValue(source).FullName, dst = r.GetRequiredValue(destination).FullName;
            var options = new QuantizeOptions
            {
                QuantizeEmbeddings = r.GetValue(embeddings),
                QuantizeLmHead = r.GetValue(lmHead),
                MaxShardBytes = r.GetValue(shardMb) * 1_000_000,
            };
            long sourceBytes;
            using (CheckpointDirectory checkpoint = CheckpointDirectory.Open(src)) sourceBytes = checkpoint.TotalBytes;

            var started = Stopwatch.GetTimestamp();
            try
            {
                SpectreUi.WithProgress(console, "quantizing " + Path.GetFileName(src), progress =>
                {
                    QuantizedCheckpointWriter.Quantize(src, dst, options, progress);
                    return 0;
                });
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException)
            {
                throw new CliException(e.Message); // already quantized, destination holds weights, same directory
            }
            double seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;

            using CheckpointDirectory written = CheckpointDirectory.Open(dst);
            int shards = Directory.EnumerateFiles(dst, "model*.safetensors").Count();
            int quantized = written.TensorNames.Count(n => written.Get(n).DType == TensorDType.I8);
            console.Out.WriteLine($"quantized {src} -> {dst}");
            console.Out.WriteLine($"  {written.TensorNames.Count} tensors ({quantized} int8 + per-row scales), {shards} shard{(shards == 1 ? "" : "s")}");
            console.Out.WriteLine($"  {sourceBytes / 1e6:F1} MB -> {written.TotalBytes / 1e6:F1} MB ({(double)written.TotalBytes / sourceBytes:P0}) in {seconds:F1} s");
            return CliApp.ExitOk;
        });
        return command;
    }
}
