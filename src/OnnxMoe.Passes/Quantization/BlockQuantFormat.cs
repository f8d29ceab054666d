using OnnxMoe.Ir;

namespace OnnxMoe.Passes.Quantization;

/// <summary>
/// How a weight matrix is cut into blocks and coded, in com.microsoft MatMulNBits terms: blocks of
/// <see cref="BlockSize"/> consecutive input channels (K) per output channel (N), codes of
/// <see cref="Bits"/> bits, with per-block zero points (asymmetric) or none (symmetric: the
/// kernel's default zero point 2^(bits-1) applies).
/// </summary>
public sealed record BlockQuantFormat
{
    public BlockQuantFormat(int bits = 4, int blockSize = 128, bool symmetric = false)
    {
        if (bits is not (4 or 8))
            throw new UserErrorException($"bits {bits} is not supported: use 4 or 8");
        if (blockSize < 16 || blockSize > 256 || (blockSize & (blockSize - 1)) != 0)
            throw new UserErrorException($"block size {blockSize} is not a power of two between 16 and 256");
        Bits = bits;
        BlockSize = blockSize;
        Symmetric = symmetric;
    }

    /// <summary>Bits per code: 4 or 8.</summary>
    public int Bits { get; }
    /// <summary>Input channels per block: a power of two in 16..256.</summary>
    public int BlockSize { get; }
    /// <summary>True: no zero points stored, codes are centred on <see cref="DefaultZeroPoint"/>.</summary>
    public bool Symmetric { get; }

    /// <summary>Largest code: 15 (4-bit) or 255 (8-bit).</summary>
    public int MaxCode => (1 << Bits) - 1;
    /// <summary>Zero point MatMulNBits assumes when none is given: 8 (4-bit) or 128 (8-bit).</summary>
    public int DefaultZeroPoint => 1 << (Bits - 1);
    /// <summary>Bytes one block of codes takes in B: block_size * bits / 8.</summary>
    public int BlockBytes => BlockSize * Bits / 8;

    /// <summary>Blocks per output channel: ceil(K / block_size); the last block is padded.</summary>
    public int BlockCount(int k) => (k + BlockSize - 1) / BlockSize;

    /// <summary>Bytes per output channel of packed zero points: ceil(k_blocks * bits / 8).</summary>
    public int ZeroPointBytesPerRow(int k) => (BlockCount(k) * Bits + 7) / 8;

    public override string ToString() => $"{Bits}-bit, block {BlockSize}, {(Symmetric ? "symmetric" : "asymmetric")}";
}
