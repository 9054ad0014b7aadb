namespace OrleansMixtral.Tokenization.Tests;

/// <summary>
/// The one prompt builder: a whole history sent at once is fitted as the conversation that made it would be, a plain
/// prompt must leave room for one token, and a history in the wrong shape is refused.
/// </summary>
public sealed class ChatPromptBuilderTests
{
    static readonly MistralTokenizer Tokenizer = TestTokenizer.Instance;
    const string System = "You are a patient guide to old cities.";

    static string Words(int n, string word) => string.Join(" ", Enumerable.Repeat(word, n));

    [Fact]
    public void A_whole_history_keeps_the_turns_its_conversation_would_and_the_template_of_what_it_keeps()
    {
        var builder = new ChatPromptBuilder(Tokenizer, 1024, replyReserveTokens: 200);
        // Four turns of ≈ 200 tokens each: with the new message over the 824 a prompt may hold.
        List<ChatMessage> history = [new(ChatRole.System, System)];
        for (var i = 0; i < 4; i++)
        {
            history.Add(new(ChatRole.User, $"Tell me about part {i}."));
            history.Add(new(ChatRole.Assistant, Words(190, "river")));
        }
        history.Add(new(ChatRole.User, "And then?"));
        var prompt = builder.ForMessages(history, maxTokens: 200);
        Assert.True(prompt.NewlyDropped > 0);
        Assert.Equal(prompt.NewlyDropped, prompt.Window.DroppedTurns);
        // What is kept is the template of the system message, the turns after the dropped ones and the new message, as
        // a client that had sent only those would get it.
        var kept = (List<ChatMessage>)[history[0], .. history.Skip(1 + 2 * prompt.NewlyDropped)];
        Assert.Equal(Tokenizer.EncodeChat(kept), prompt.Ids);
        Assert.True(prompt.Ids.Length + 200 <= 1024);
        Assert.Equal(200, prompt.MaxTokens);
        // The same history as a conversation's turns, one at a time (the replies' ids as their text encodes), drops the same turns.
        var window = ConversationWindow.Empty;
        var users = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            var turn = builder.NextTurn(window, System, users, history[1 + 2 * i].Content, 200);
            var reply = Tokenizer.Encode(history[2 + 2 * i].Content, addBos: false);
            window = turn.Commit(reply, Tokenizer.EosId);
            users = [.. users.Skip(turn.NewlyDropped), history[1 + 2 * i].Content];
        }
        Assert.Equal(prompt.Ids.Length, builder.NextTurn(window, System, users, "And then?", 200).Ids.Length);
    }

    [Fact]
    public void No_max_tokens_leaves_the_reply_what_the_context_does_and_a_short_history_drops_nothing()
    {
        var builder = new ChatPromptBuilder(Tokenizer, 1024);
        var prompt = builder.ForMessages([new(ChatRole.User, "Hello."), new(ChatRole.Assistant, "Hi."), new(ChatRole.User, "How are you?")], null);
        Assert.Equal(0, prompt.NewlyDropped);
        Assert.Equal(1024 - prompt.Ids.Length, prompt.MaxTokens);
    }

    [Fact]
    public void A_plain_prompt_must_leave_room_for_one_token_and_a_history_must_be_pairs_then_a_user_message()
    {
        var builder = new ChatPromptBuilder(Tokenizer, 1024);
        builder.CheckPrompt(1023);
        Assert.Contains("context of 1024 tokens (1024 tokens", Assert.Throws<ContextLengthExceededException>(() => builder.CheckPrompt(1024)).Message);
        Assert.Throws<ArgumentException>(() => builder.ForMessages([new(ChatRole.User, "a"), new(ChatRole.User, "b"), new(ChatRole.User, "c")], null));
        Assert.Throws<ArgumentException>(() => builder.ForMessages([new(ChatRole.User, "a"), new(ChatRole.Assistant, "b")], null));
        var huge = Words(1100, "river");
        Assert.Equal(
            Assert.Throws<ContextLengthExceededException>(() => builder.CheckFits(System, huge)).Message,
            Assert.Throws<ContextLengthExceededException>(() => builder.ForMessages([new(ChatRole.System, System), new(ChatRole.User, "a"), new(ChatRole.Assistant, "b"), new(ChatRole.User, huge)], 10)).Message);
    }
}
