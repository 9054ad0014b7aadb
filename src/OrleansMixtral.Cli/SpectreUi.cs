using OrleansMixtral.Model;
using Spectre.Console;

namespace OrleansMixtral.Cli;

/// <summary>
/// Everything drawn with Spectre.Console, kept in one class so commands that draw nothing (generate on a pipe)
/// never load it.
/// </summary>
static class SpectreUi
{
    /// <summary>Where a long run reports how far it is (<see cref="WithProgressAsync"/>); <see cref="None"/> shows nothing.</summary>
    public sealed class RunProgress(Action<string?, double, double> report)
    {
        public static readonly RunProgress None = new((_, _, _) => { });
        public bool Shown => this != None;
        /// <param name="what">The bar's new description, or null to keep it.</param>
        public void Report(string? what, double done, double total) => report(what, done, total);
    }

    public static IAnsiConsole Create(TextWriter writer, bool isTerminal) => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Out = new AnsiConsoleOutput(writer),
        Ansi = isTerminal ? AnsiSupport.Detect : AnsiSupport.No,
        ColorSystem = isTerminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
        Interactive = isTerminal ? InteractionSupport.Detect : InteractionSupport.No,
    });

    /// <summary>Runs <paramref name="work"/> under a byte progress bar on stderr.</summary>
    public static T WithProgress<T>(CliConsole console, string description, Func<LoadProgress, T> work)
    {
        IAnsiConsole ansi = Create(console.Error, console.ErrorIsTerminal);
        return ansi.Progress()
            .AutoClear(true)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask task = ctx.AddTask(Markup.Escape(description), autoStart: true, maxValue: 1);
                T result = work((_, done, total) =>
                {
                    task.MaxValue = Math.Max(1, total);
                    task.Value = done;
                });
                task.Value = task.MaxValue;
                return result;
            });
    }

    /// <summary>
    /// Runs <paramref name="work"/> under a progress bar on stderr with the time left, when stderr is a terminal (elsewhere
    /// it just runs). The work reports through <see cref="RunProgress.Report"/>: what it is doing, done and total.
    /// </summary>
    public static async Task<T> WithProgressAsync<T>(CliConsole console, string description, Func<RunProgress, Task<T>> work)
    {
        if (!console.ErrorIsTerminal) return await work(RunProgress.None);
        IAnsiConsole ansi = Create(console.Error, isTerminal: true);
        return await ansi.Progress()
            .AutoClear(true)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
                new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                ProgressTask task = ctx.AddTask(Markup.Escape(description), autoStart: true, maxValue: 1);
                var progress = new RunProgress((what, done, total) =>
                {
                    if (what is not null) task.Description = Markup.Escape(what);
                    task.MaxValue = Math.Max(1e-9, total);
                    task.Value = Math.Min(done, task.MaxValue);
                });
                T result = await work(progress);
                task.Value = task.MaxValue;
                return result;
            });
    }

    /// <summary>The same for work that is not asynchronous.</summary>
    public static T WithProgress<T>(CliConsole console, string description, Func<RunProgress, T> work) =>
        WithProgressAsync(console, description, p => Task.FromResult(work(p))).GetAwaiter().GetResult();

    /// <summary>A table written to <paramref name="writer"/>.</summary>
    /// <param name="fileWidth">The width when the writer is a file or pipe (a wide table needs more than 120 for its headers).</param>
    public static void WriteTable(TextWriter writer, bool isTerminal, string? title, string[] columns, IEnumerable<string[]> rows, int fileWidth = 120)
    {
        IAnsiConsole ansi = Create(writer, isTerminal);
        if (!isTerminal) ansi.Profile.Width = fileWidth; // a file or pipe has no width; 80 would squeeze the headers
        var table = new Table();
        if (title is not null) table.Title(Markup.Escape(title));
        foreach (string c in columns) table.AddColumn(new TableColumn(Markup.Escape(c)).RightAligned());
        table.Columns[0].LeftAligned();
        foreach (string[] row in rows) table.AddRow(row.Select(Markup.Escape).ToArray());
        ansi.Write(table);
    }
}
