namespace OrleansMixtral.Engine;

/// <summary>Rotary-embedding tables shared by every backend, so that all rotate by exactly the same angles.</summary>
public static class RopeTables
{
    /// <summary>cos/sin of position·θ^(−2i/d), [positions, d/2], computed in fp32 the way transformers does.</summary>
    public static (float[] Cos, float[] Sin) Compute(int positions, int headDim, float theta)
    {
        var half = headDim / 2;
        var invFreq = new float[half];
        for (var i = 0; i < half; i++) invFreq[i] = 1f / MathF.Pow(theta, 2 * i / (float)headDim);
        var cos = new float[(long)positions * half];
        var sin = new float[(long)positions * half];
        for (var p = 0; p < positions; p++)
        {
            for (var i = 0; i < half; i++)
            {
                var angle = p * invFreq[i];
                cos[(long)p * half + i] = MathF.Cos(angle);
                sin[(long)p * half + i] = MathF.Sin(angle);
            }
        }
        return (cos, sin);
    }
}
