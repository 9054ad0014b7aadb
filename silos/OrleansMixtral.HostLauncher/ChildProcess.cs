using System.Diagnostics;
using System.Runtime.InteropServices;

namespace OrleansMixtral.HostLauncher;

/// <summary>
/// A program the launcher runs (a silo, the gateway): its output goes to the launcher's, each line prefixed with the
/// child's name; the last lines are kept to say why it failed; it is stopped with SIGTERM (a graceful stop: a silo
/// leaves the cluster and disposes its engine) and killed only when that takes too long.
/// </summary>
public sealed partial class ChildProcess : IDisposable
{
    const int TailLines = 40;
    const int SigTerm = 15;
    readonly Process _process;
    readonly Queue<string> _tail = new();
    readonly TextWriter _output;
    readonly Action<string>? _onLine;

    ChildProcess(string name, Process process, TextWriter output, Action<string>? onLine)
    {
        Name = name;
        _process = process;
        _output = output;
        _onLine = onLine;
    }

    public string Name { get; }
    public int Id => _process.Id;
    public bool HasExited => _process.HasExited;
    public int ExitCode => _process.ExitCode;
    /// <summary>Completes when the process has exited and its output is read to the end.</summary>
    public Task Exited { get; private set; } = Task.CompletedTask;

    /// <summary>The last lines it wrote (stdout and stderr together).</summary>
    public string Tail
    {
        get { lock (_tail) return string.Join(Environment.NewLine, _tail); }
    }

    /// <summary>Starts <c>dotnet PROGRAM.dll ARGS</c> in <paramref name="workingDirectory"/>; <paramref name="onLine"/> sees each line first.</summary>
    public static ChildProcess Start(string name, string dotnet, string program, IEnumerable<string> arguments, string workingDirectory,
        TextWriter output, Action<string>? onLine = null)
    {
        var psi = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true, // the children never read the terminal the launcher owns
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        psi.ArgumentList.Add(program);
        foreach (var a in arguments) psi.ArgumentList.Add(a);
        var process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        var child = new ChildProcess(name, process, output, onLine);
        var stdoutDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stderrDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) => { if (e.Data is null) stdoutDone.TrySetResult(); else child.OnLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is null) stderrDone.TrySetResult(); else child.OnLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        child.Exited = Task.WhenAll(process.WaitForExitAsync(), stdoutDone.Task, stderrDone.Task);
        return child;
    }

    void OnLine(string line)
    {
        lock (_tail)
        {
            _tail.Enqueue(line);
            while (_tail.Count > TailLines) _tail.Dequeue();
        }
        _onLine?.Invoke(line);
        lock (_output) _output.WriteLine($"[{Name}] {line}");
    }

    /// <summary>Asks it to stop (SIGTERM); false when it had exited already.</summary>
    public bool Terminate()
    {
        if (_process.HasExited) return false;
        return Kill(_process.Id, SigTerm) == 0;
    }

    /// <summary>SIGTERM, then SIGKILL (its whole process tree) after <paramref name="grace"/>; true when it stopped by itself.</summary>
    public async Task<bool> StopAsync(TimeSpan grace)
    {
        Terminate();
        try
        {
            await Exited.WaitAsync(grace);
            return true;
        }
        catch (TimeoutException)
        {
            KillNow();
            await Exited.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { });
            return false;
        }
    }

    /// <summary>SIGKILL to it and its children, at once.</summary>
    public void KillNow()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { } // exited meanwhile
    }

    public void Dispose() => _process.Dispose();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
