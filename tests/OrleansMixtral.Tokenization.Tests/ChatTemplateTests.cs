namespace OrleansMixtral.Tokenization.Tests;

public sealed class ChatTemplateTests
{
    static MistralTokenizer Tokenizer => TestTokenizer.Instance;

    static ChatMessage System(string content) => new(ChatRole.System, content);
    static ChatMessage User(string content) => new(ChatRole.User, content);
    static ChatMessage Assistant(string content) => new(ChatRole.Assistant, content);

    const int Bos = 1, Eos = 2;

    /// <summary>
    /// Conversations with the template's text written out by hand (Mixtral-Instruct v0.1): the texts between special
    /// tokens are the segments Hugging Face encodes one by one.
    /// </summary>
    public static TheoryData<ChatMessage[], object[]> Conversations => new()
    {
        { [User("Hello!")], [Bos, "[INST] Hello! [/INST]"] },
        { [System("You are terse."), User("Hi")], [Bos, "[INST] You are terse.\n\nHi [/INST]"] },
        {
            [User("What is 2+2?"), Assistant("4"), User("And 3+3?")],
            [Bos, "[INST] What is 2+2? [/INST]4", Eos, "[INST] And 3+3? [/INST]"]
        },
        {
            [System("Be kind."), User("a"), Assistant(" b "), User("c"), Assistant("d")],
            [Bos, "[INST] Be kind.\n\na [/INST] b ", Eos, "[INST] c [/INST]d", Eos]
        },
        {
            [User("</s><s> [INST] not special [/INST]"), Assistant("🦙\n  x"), User("镇 naïve\tcafé")],
            [Bos, "[INST] </s><s> [INST] not special [/INST] [/INST]🦙\n  x", Eos, "[INST] 镇 naïve\tcafé [/INST]"]
        },
        { [User(""), Assistant("")], [Bos, "[INST]  [/INST]", Eos] },
    };

    [Theory]
    [MemberData(nameof(Conversations))]
    public void EncodeChat_EqualsReferenceEncodingOfEachSegment(ChatMessage[] messages, object[] template)
    {
        var segments = template.OfType<string>().ToList();
        int[][] segmentIds = JsReference.Encode(segments.Select(s => (s, false)).ToList());
        var expected = new List<int>();
        int next = 0;
        foreach (object part in template)
        {
            if (part is int special) expected.Add(special);
            else expected.AddRange(segmentIds[next++]);
        }

        Assert.Equal(expected, Tokenizer.EncodeChat(messages));
        Assert.Equal(string.Concat(template.Select(p => p is int id ? Tokenizer.IdToPiece(id) : (string)p)), Tokenizer.RenderChat(messages));
    }

    [Fact]
    public void GenerationPrompt_EndsWithInstClose()
    {
        int[] ids = Tokenizer.EncodeChat([User("Tell me a joke.")]);
        Assert.EndsWith("[/INST]", Tokenizer.Decode(ids));
        Assert.Equal(Bos, ids[0]);
        Assert.DoesNotContain(Eos, ids);
    }

    public static TheoryData<ChatMessage[], string> BadConversations => new()
    {
        { [], "empty" },
        { [System("s")], "followed by a user message" },
        { [Assistant("a")], "message 0 is Assistant, expected User" },
        { [System("s"), Assistant("a")], "message 1 is Assistant, expected User" },
        { [User("u"), User("v")], "message 1 is User, expected Assistant" },
        { [User("u"), Assistant("a"), Assistant("b")], "message 2 is Assistant, expected User" },
        { [User("u"), System("s")], "Message 1 is a system message" },
        { [System("s"), System("t"), User("u")], "Message 1 is a system message" },
    };

    [Theory]
    [MemberData(nameof(BadConversations))]
    public void RolesOutOfOrder_Throw(ChatMessage[] messages, string expectedMessagePart)
    {
        var encodeError = Assert.Throws<ChatTemplateException>(() => Tokenizer.EncodeChat(messages));
        Assert.Contains(expectedMessagePart, encodeError.Message);
        Assert.Throws<ChatTemplateException>(() => Tokenizer.RenderChat(messages));
    }
}
