using System.Text.Json;

namespace OrleansMixtral.Model;

/// <summary>Typed field access on a config.json object; every failure names the file and the field.</summary>
readonly struct ConfigJsonReader(JsonElement obj, string sourceName, string prefix = "")
{
    public ModelFormatException Error(string field, string problem) => new(sourceName, prefix + field, problem);

    public bool Has(string field) => obj.TryGetProperty(field, out JsonElement value) && value.ValueKind != JsonValueKind.Null;

    JsonElement Required(string field) =>
        Has(field) ? obj.GetProperty(field) : throw Error(field, "required field is missing");

    public int Int(string field) => ToInt(field, Required(field));

    public int? OptionalInt(string field) => Has(field) ? ToInt(field, obj.GetProperty(field)) : null;

    public double Double(string field)
    {
        JsonElement value = Required(field);
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number))
            throw Error(field, $"must be a number, found {value.GetRawText()}");
        return number;
    }

    public bool OptionalBool(string field, bool fallback)
    {
        if (!Has(field)) return fallback;
        JsonElement value = obj.GetProperty(field);
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw Error(field, $"must be true or false, found {value.GetRawText()}"),
        };
    }

    public string String(string field)
    {
        JsonElement value = Required(field);
        return value.ValueKind == JsonValueKind.String ? value.GetString()! : throw Error(field, $"must be a string, found {value.GetRawText()}");
    }

    public string? OptionalString(string field) => Has(field) ? String(field) : null;

    /// <summary>An int or an array of ints (eos_token_id may be either).</summary>
    public int[] IntOrIntArray(string field)
    {
        JsonElement value = Required(field);
        if (value.ValueKind != JsonValueKind.Array) return [ToInt(field, value)];
        var values = new int[value.GetArrayLength()];
        if (values.Length == 0) throw Error(field, "must not be an empty array");
        int i = 0;
        foreach (JsonElement item in value.EnumerateArray()) values[i++] = ToInt(field, item);
        return values;
    }

    /// <summary>A nested object, or null when absent or JSON null.</summary>
    public ConfigJsonReader? OptionalObject(string field)
    {
        if (!Has(field)) return null;
        JsonElement value = obj.GetProperty(field);
        if (value.ValueKind != JsonValueKind.Object) throw Error(field, $"must be a JSON object, found {value.GetRawText()}");
        return new ConfigJsonReader(value, sourceName, prefix + field + ".");
    }

    int ToInt(string field, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Number) throw Error(field, $"must be an integer, found {value.GetRawText()}");
        if (value.TryGetInt32(out int number)) return number;
        // A whole number written as a float (32.0, 3.2e1) is an integer; one too large for a 32-bit integer (1e12) is out
        // of range, not "not an integer".
        bool parsed = value.TryGetDouble(out double d);
        if (!parsed || double.IsInfinity(d)) throw Error(field, $"is out of range: {value.GetRawText()} does not fit a 32-bit integer");
        if (d != Math.Floor(d)) throw Error(field, $"must be an integer, found {value.GetRawText()}");
        if (d < int.MinValue || d > int.MaxValue) throw Error(field, $"is out of range: {value.GetRawText()} does not fit a 32-bit integer");
        return (int)d;
    }
}
