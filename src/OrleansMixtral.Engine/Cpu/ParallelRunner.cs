namespace OrleansMixtral.Engine.Cpu;

/// <summary>A body of work split by index range; implemented by reusable job objects so nothing allocates.</summary>
public interface IParallelBody
{
    void Run(int start, int end);
}

/// <summary>
/// A fixed team of worker threads for the forward pass. Parallel.For allocates per call and pays task
/// scheduling on every matmul; this splits [0, count) into one static part per thread and runs them.
/// </summary>
public sealed class ParallelRunner : IDisposable
{
    readonly Thread[] _workers;
    readonly SemaphoreSlim _start = new(0);
    IParallelBody? _body;
    int _count, _parts, _nextPart, _remaining;
    volatile bool _stopping;

    public ParallelRunner(int threads)
    {
        Threads = Math.Max(1, threads);
        _workers = new Thread[Threads - 1];
        for (var i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"cpu-forward-{i + 1}" };
            _workers[i].Start();
        }
    }

    public int Threads { get; }

    /// <summary>Runs body over [0, count); items fewer than <paramref name="minPerPart"/> per thread run inline.</summary>
    public void For(int count, IParallelBody body, int minPerPart = 1)
    {
        var parts = Math.Min(Threads, Math.Max(1, count / Math.Max(1, minPerPart)));
        if (parts <= 1)
        {
            body.Run(0, count);
            return;
        }
        _body = body;
        _count = count;
        _parts = parts;
        Volatile.Write(ref _nextPart, 0);
        Volatile.Write(ref _remaining, parts);
        _start.Release(parts - 1);
        RunParts();
        var spin = new SpinWait();
        while (Volatile.Read(ref _remaining) != 0) spin.SpinOnce(-1);
        _body = null;
    }

    void RunParts()
    {
        int part;
        while ((part = Interlocked.Increment(ref _nextPart) - 1) < _parts)
        {
            var start = (int)((long)_count * part / _parts);
            var end = (int)((long)_count * (part + 1) / _parts);
            _body!.Run(start, end);
            Interlocked.Decrement(ref _remaining);
        }
    }

    void WorkerLoop()
    {
        while (true)
        {
            _start.Wait();
            if (_stopping) return;
            RunParts();
        }
    }

    public void Dispose()
    {
        _stopping = true;
        if (_workers.Length > 0) _start.Release(_workers.Length); // one thread: no workers, and Release(0) throws
        foreach (var w in _workers) w.Join();
        _start.Dispose();
    }
}
