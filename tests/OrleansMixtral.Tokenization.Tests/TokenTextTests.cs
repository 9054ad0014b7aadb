using System.Text;

namespace OrleansMixtral.Tokenization.Tests;

/// <summary>One token's text and bytes, as logprobs show them (OpenAI's "token" and "bytes").</summary>
public sealed class TokenTextTests
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    [Fact]
    public void Pieces_are_their_text_with_the_space_and_bytes_that_are_no_character_are_named_as_OpenAI_names_them()
    {
        int @is = Tokenizer.Encode("is", addBos: false)[^1];
        Assert.Equal("▁is", Tokenizer.IdToPiece(@is));
        Assert.Equal(" is", Tokenizer.TokenText(@is));
        Assert.Equal(" is"u8.ToArray(), Tokenizer.TokenBytes(@is));
        Assert.Equal("\n", Tokenizer.TokenText(3 + 0x0A));
        Assert.Equal([0x0A], Tokenizer.TokenBytes(3 + 0x0A));
        Assert.Equal("bytes:\\xe2", Tokenizer.TokenText(3 + 0xE2));
        Assert.Equal([0xE2], Tokenizer.TokenBytes(3 + 0xE2));
        Assert.Equal("</s>", Tokenizer.TokenText(Tokenizer.EosId));
    }

    [Fact]
    public void The_bytes_of_a_texts_tokens_are_the_text_after_the_dummy_prefix()
    {
        foreach (ParityLine line in JsReference.GeneratedLines.Where(l => !l.Text.Contains('\u2581')).Take(2000))
        {
            byte[] bytes = [.. Tokenizer.Encode(line.Text, addBos: false).SelectMany(Tokenizer.TokenBytes)];
            Assert.Equal(Encoding.UTF8.GetBytes(line.Text.Length == 0 ? "" : " " + line.Text), bytes);
        }
    }
}
