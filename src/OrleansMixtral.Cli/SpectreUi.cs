using OrleansMixtral.Model;
using Spectre.Console;

namespace OrleansMixtral.Cli;

/// <summary>
/// Everything drawn with Spectre.Console, kept in one class so commands that draw nothing (generate on a pipe)
/// never load it.
/// </summary>
static class SpectreUi
{
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
