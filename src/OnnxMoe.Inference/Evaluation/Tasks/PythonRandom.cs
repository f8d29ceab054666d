namespace OnnxMoe.Inference.Evaluation.Tasks;

/// <summary>
/// CPython's random.Random (MT19937, seeded by init_by_array from the seed's 32-bit words) with the two calls lm-eval's
/// few-shot sampler makes: <see cref="Sample{T}"/> (random.sample: the pool or the set algorithm, CPython 3.11's
/// thresholds) over _randbelow_with_getrandbits. Same seed, same few-shot examples as lm-eval.
/// </summary>
public sealed class PythonRandom
{
    private const int N = 624, M = 397;
    private readonly uint[] _mt = new uint[N];
    private int _index = N + 1;

    public PythonRandom(long seed)
    {
        // random.seed(int): the key is abs(seed) split into little-endian 32-bit words ([0] for 0).
        ulong a = (ulong)Math.Abs(seed);
        var key = new List<uint>();
        do { key.Add((uint)(a & 0xffffffff)); a >>= 32; } while (a != 0);
        InitByArray(key.ToArray());
    }

    private void InitGenrand(uint s)
    {
        _mt[0] = s;
        for (int i = 1; i < N; i++) _mt[i] = 1812433253u * (_mt[i - 1] ^ (_mt[i - 1] >> 30)) + (uint)i;
        _index = N;
    }

    private void InitByArray(uint[] key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Length); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++; j++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
            if (j >= key.Length) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
        }
        _mt[0] = 0x80000000u;
    }

    public uint NextUInt32()
    {
        if (_index >= N)
        {
            for (int k = 0; k < N; k++)
            {
                uint y = (_mt[k] & 0x80000000u) | (_mt[(k + 1) % N] & 0x7fffffffu);
                _mt[k] = _mt[(k + M) % N] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908b0dfu : 0u);
            }
            _index = 0;
        }
        uint z = _mt[_index++];
        z ^= z >> 11;
        z ^= (z << 7) & 0x9d2c5680u;
        z ^= (z << 15) & 0xefc60000u;
        z ^= z >> 18;
        return z;
    }

    /// <summary>random.getrandbits(k) for 1 &lt;= k &lt;= 32.</summary>
    public uint GetRandBits(int k) => NextUInt32() >> (32 - k);

    /// <summary>random._randbelow_with_getrandbits(n): rejection sampling on bit_length(n) bits.</summary>
    public int RandBelow(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n));
        int k = 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)n);
        uint r = GetRandBits(k);
        while (r >= (uint)n) r = GetRandBits(k);
        return (int)r;
    }

    /// <summary>random.sample(population, k).</summary>
    public List<T> Sample<T>(IReadOnlyList<T> population, int k)
    {
        int n = population.Count;
        if (k < 0 || k > n) throw new ArgumentException($"sample larger than population ({k} > {n}) or negative");
        var result = new List<T>(k);
        int setsize = 21;
        if (k > 5) setsize += (int)Math.Pow(4, Math.Ceiling(Math.Log(k * 3) / Math.Log(4)));
        if (n <= setsize)
        {
            var pool = population.ToList();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n - i);
                result.Add(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        }
        else
        {
            var selected = new HashSet<int>();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n);
                while (selected.Contains(j)) j = RandBelow(n);
                selected.Add(j);
                result.Add(population[j]);
            }
        }
        return result;
    }
}
