namespace OnnxMoe.Tests.Quantization;

/// <summary>
/// Independent, deliberately naive reading of the MatMulNBits layout (FACTS section 3), element by
/// element, sharing no code with the quantizer: W[k, n] = (q - zp) * scale.
/// </summary>
internal static class ScalarReference
{
    /// <summary>Dequantized W in graph layout [K, N].</summary>
    public static float[] Dequantize(byte[] b, float[] scales, byte[]? zeroPoints, int k, int n, int bits, int blockSize)
    {
        int blocks = (k + blockSize - 1) / blockSize;
        int blobBytes = blockSize * bits / 8;
        int zpRowBytes = (blocks * bits + 7) / 8;
        var w = new float[k * n];
        for (int col = 0; col < n; col++)
            for (int row = 0; row < k; row++)
            {
                int block = row / blockSize;
                int inBlock = row % blockSize;
                int code;
                if (bits == 8) code = b[(col * blocks + block) * blobBytes + inBlock];
                else
                {
                    byte packed = b[(col * blocks + block) * blobBytes + inBlock / 2];
                    code = inBlock % 2 == 0 ? packed % 16 : packed / 16;
                }
                int zp;
                if (zeroPoints == null) zp = bits == 8 ? 128 : 8;
                else if (bits == 8) zp = zeroPoints[col * zpRowBytes + block];
                else
                {
                    byte packed = zeroPoints[col * zpRowBytes + block / 2];
                    zp = block % 2 == 0 ? packed % 16 : packed / 16;
                }
                w[row * n + col] = (code - zp) * scales[col * blocks + block];
            }
        return w;
    }

    /// <summary>Code of element (row k, column n) read naively from B.</summary>
    public static int Code(byte[] b, int k, int n, int row, int col, int bits, int blockSize)
    {
        int blocks = (k + blockSize - 1) / blockSize;
        int blobBytes = blockSize * bits / 8;
        int index = (col * blocks + row / blockSize) * blobBytes;
        int inBlock = row % blockSize;
        return bits == 8 ? b[index + inBlock] : inBlock % 2 == 0 ? b[index + inBlock / 2] % 16 : b[index + inBlock / 2] / 16;
    }

    /// <summary>Random weights in graph layout [K, N] with a mix of scales and a few one-signed or constant blocks.</summary>
    public static float[] RandomWeight(Random rng, int k, int n)
    {
        var w = new float[k * n];
        float amplitude = (float)Math.Pow(10, rng.Next(-3, 2));
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1) * amplitude;
        // Some columns one-signed, one constant, to reach the edge cases of the range computation.
        if (n > 1) for (int r = 0; r < k; r++) w[r * n + 1] = Math.Abs(w[r * n + 1]) + amplitude;
        if (n > 2) for (int r = 0; r < k; r++) w[r * n + 2] = 0.25f;
        return w;
    }

    public static float[] Transpose(float[] a, int rows, int cols)
    {
        var t = new float[a.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[c * rows + r] = a[r * cols + c];
        return t;
    }
}
