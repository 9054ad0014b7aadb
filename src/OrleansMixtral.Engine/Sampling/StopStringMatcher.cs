using System.Text;

namespace OrleansMixtral.Engine.Sampling;

/// <summary>
/// Streams generated text while watching for stop strings: text that might be the start of a stop string is
/// held back until it is known not to be, and output ends just before a stop string.
/// </summary>
public sealed class StopStringMatcher(IReadOnlyList<string> stops)
{
    readonly StringBuilder _text = new();
    int _emitted;

    public bool Stopped { get; private set; }
    public string Text => _text.ToString(0, _emitted);

    /// <summary>Adds decoded text; returns what may be shown now.</summary>
    public string Append(string piece)
    {
        if (Stopped) return "";
        _text.Append(piece);
        if (stops.Count == 0) return Emit(_text.Length);
        var all = _text.ToString();
        var firstStop = -1;
        foreach (var s in stops)
        {
            var from = Math.Max(0, _emitted - s.Length + 1);
            var at = all.IndexOf(s, from, StringComparison.Ordinal);
            if (at >= 0 && (firstStop < 0 || at < firstStop)) firstStop = at;
        }
        if (firstStop >= 0)
        {
            Stopped = true;
            return Emit(Math.Max(firstStop, _emitted));
        }
        // hold back the longest tail that is a proper prefix of some stop string
        var hold = 0;
        foreach (var s in stops)
            for (var k = Math.Min(s.Length - 1, all.Length - _emitted); k > hold; k--)
                if (all.AsSpan(all.Length - k).SequenceEqual(s.AsSpan(0, k))) { hold = k; break; }
        return Emit(all.Length - hold);
    }

    /// <summary>At the end of generation (not by a stop string): whatever was held back.</summary>
    public string Flush() => Stopped ? "" : Emit(_text.Length);

    string Emit(int upTo)
    {
        if (upTo <= _emitted) return "";
        var s = _text.ToString(_emitted, upTo - _emitted);
        _emitted = upTo;
        return s;
    }
}
