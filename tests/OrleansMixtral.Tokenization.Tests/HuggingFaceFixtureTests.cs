using System.Text.Json;
using OrleansMixtral.Tests;

namespace OrleansMixtral.Tokenization.Tests;

/// <summary>Prompt ids computed by Hugging Face transformers (tests/fixtures/tiny-mixtral/prompts.json).</summary>
public sealed class HuggingFaceFixtureTests
{
    static readonly string PromptsFile = Path.Combine(RepoPaths.Fixtures, "tiny-mixtral", "prompts.json");

    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    [Fact]
    public void PlainPrompts_EncodeToTheReferenceIds()
    {
        var plain = Prompts().Where(p => p.GetProperty("kind").GetString() == "plain").ToList();
        Assert.NotEmpty(plain);
        foreach (JsonElement prompt in plain)
        {
            string text = prompt.GetProperty("text").GetString()!;
            Assert.Equal(Ids(prompt), Tokenizer.Encode(text));
            Assert.Equal(text, Tokenizer.Decode(Ids(prompt)));
        }
    }

    [Fact]
    public void ChatPrompts_EncodeAndRenderLikeTheReference()
    {
        var chats = Prompts().Where(p => p.GetProperty("kind").GetString() == "chat").ToList();
        Assert.NotEmpty(chats);
        foreach (JsonElement prompt in chats)
        {
            ChatMessage[] messages = prompt.GetProperty("messages").EnumerateArray()
                .Select(m => new ChatMessage(Enum.Parse<ChatRole>(m.GetProperty("role").GetString()!, ignoreCase: true), m.GetProperty("content").GetString()!))
                .ToArray();
            Assert.Equal(Ids(prompt), Tokenizer.EncodeChat(messages));
            Assert.Equal(prompt.GetProperty("text").GetString(), Tokenizer.RenderChat(messages));
        }
    }

    static int[] Ids(JsonElement prompt) => prompt.GetProperty("ids").EnumerateArray().Select(id => id.GetInt32()).ToArray();

    static List<JsonElement> Prompts()
    {
        using JsonDocument document = JsonDocument.Parse(File.ReadAllBytes(PromptsFile));
        return document.RootElement.GetProperty("prompts").EnumerateArray().Select(p => p.Clone()).ToList();
    }
}
