namespace OrleansMixtral;

/// <summary>Who said a message of a chat.</summary>
public enum ChatRole
{
    System = 0,
    User = 1,
    Assistant = 2,
}

/// <summary>
/// One message of a chat: the one message type of the chat template, a conversation's stored history, the grains'
/// snapshots, the gateway and the clients.
/// </summary>
public sealed record ChatMessage(ChatRole Role, string Content);
