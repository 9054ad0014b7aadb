using System.Text;
using System.Text.Unicode;

namespace OrleansMixtral.Tokenization.Tests;

/// <summary>
/// The text of a completion: what Decode of prompt + output adds to Decode of the prompt (vLLM's incremental
/// detokenization against the prompt), so that prompt + completion reads as one text.
/// </summary>
public sealed class ContinuationDetokenizerTests
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    static string Continue(int[] prompt, IEnumerable<int> output, bool skipSpecial = true)
    {
        var detokenizer = Tokenizer.CreateContinuationDetokenizer(prompt, skipSpecial);
        var text = new StringBuilder();
        foreach (int id in output) text.Append(detokenizer.Push(id));
        return text.Append(detokenizer.Flush()).ToString();
    }

    [Fact]
    public void A_completion_keeps_the_space_before_its_first_word()
    {
        int[] prompt = Tokenizer.Encode("The history of the city");
        int[] output = Tokenizer.Encode(" is the most", addBos: false)[1..]; // without the dummy prefix's "▁"
        Assert.Equal("▁is", Tokenizer.IdToPiece(output[0]));
        Assert.Equal(" is the most", Continue(prompt, output));
        // a plain stream (a chat reply) starts its own text: the space goes, as Decode of the output alone has it
        Assert.Equal("is the most", Tokenizer.Decode(output));
    }

    [Fact]
    public void After_a_prompt_without_text_the_first_space_is_stripped_as_Decode_strips_it()
    {
        int[] output = Tokenizer.Encode("Hello there", addBos: true)[1..];
        Assert.Equal("Hello there", Continue([Tokenizer.BosId], output));
        Assert.Equal(" Hello there", Continue([Tokenizer.BosId], output, skipSpecial: false)); // "<s>" is text then
    }

    [Fact]
    public void A_character_the_prompt_leaves_unfinished_is_finished_by_the_output()
    {
        int[] llama = [.. Encoding.UTF8.GetBytes("🦙").Select(b => 3 + b)];
        int[] prompt = [.. Tokenizer.Encode("a"), llama[0], llama[1]];
        Assert.Equal("🦙 b", Continue(prompt, [llama[2], llama[3], .. Tokenizer.Encode("b", addBos: false)]));
        // a whole character at the prompt's end is the prompt's
        Assert.Equal(" b", Continue([.. Tokenizer.Encode("a"), .. llama], Tokenizer.Encode("b", addBos: false)));
    }

    /// <summary>
    /// Arbitrary prompts and outputs, heavy in byte pieces (invalid UTF-8 included) and special tokens: prompt text +
    /// continuation is Decode of the whole, the prompt's text being Decode of it without an unfinished byte run at its end.
    /// (Where the prompt ends in whole characters of bytes and the output goes on in bytes, Decode of the whole would read
    /// both as one run, spoiling the prompt's characters if the output's are invalid; those stay the prompt's: see above.)
    /// </summary>
    [Fact]
    public void Random_prompts_and_outputs_read_as_Decode_of_the_whole()
    {
        var random = new Random(5);
        int[] RandomIds(int max) => [.. Enumerable.Range(0, random.Next(0, max)).Select(_ => random.Next(5) switch
        {
            0 => random.Next(3, 259),                 // a byte
            1 => random.Next(0x80, 0xC0) + 3,         // a continuation byte
            2 => random.Next(0, 3),                   // <unk>, <s>, </s>
            _ => random.Next(259, Tokenizer.VocabSize),
        })];
        for (int n = 0; n < 3000; n++)
        {
            int[] prompt = [Tokenizer.BosId, .. RandomIds(12)];
            int[] output = RandomIds(12);
            foreach (bool skipSpecial in new[] { true, false })
            {
                bool Skipped(int id) => skipSpecial && id < 3; // <unk>, <s>, </s> are special
                int runStart = prompt.Length;
                while (runStart > 0 && (prompt[runStart - 1] is >= 3 and < 259 || Skipped(prompt[runStart - 1]))) runStart--;
                byte[] run = [.. prompt[runStart..].Where(id => id >= 3).Select(id => (byte)(id - 3))];
                bool whole = Utf8.IsValid(run);
                int[] outputText = [.. output.Where(id => !Skipped(id))];
                if (whole && run.Length > 0 && outputText.Length > 0 && outputText[0] is >= 3 and < 259) continue;
                string promptText = Tokenizer.Decode(whole ? prompt : prompt[..runStart], skipSpecial);
                Assert.Equal(Tokenizer.Decode([.. prompt, .. output], skipSpecial), promptText + Continue(prompt, output, skipSpecial));
            }
        }
    }
}
