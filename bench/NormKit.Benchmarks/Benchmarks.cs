using BenchmarkDotNet.Attributes;
using NormKit.Kernels;

namespace NormKit.Benchmarks;

/// <summary>What the current run measures; set by Program before BenchmarkDotNet starts (in-process).</summary>
public static class Plan
{
    public static IReadOnlyList<BenchCase> Cases { get; set; } = BenchCase.All();
    public static long RooflineBytes { get; set; } = 256L << 20;
    public static int[] Threads { get; set; } = [1, 2];
}

public class RooflineBench
{
    public static IEnumerable<string> KindValues => Roofline.Kinds;
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(KindValues))] public string Kind { get; set; } = "copy";
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private Roofline? _r;
    [GlobalSetup] public void Setup() => _r = new Roofline(Kind, Threads, Plan.RooflineBytes);
    [GlobalCleanup] public void Cleanup() => _r?.Dispose();
    [Benchmark] public void Run() => _r!.Run();
}

public class NormKitBench
{
    public static IEnumerable<BenchCase> CaseValues => Plan.Cases;
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(CaseValues))] public BenchCase Case { get; set; } = null!;
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private NormKitOp? _op;
    [GlobalSetup]
    public void Setup()
    {
        NormKitThreading.MaxDegreeOfParallelism = Threads;
        _op = new NormKitOp(Case);
    }
    [Benchmark] public void Run() => _op!.Run();
}

public class OrtBench
{
    public static IEnumerable<BenchCase> CaseValues => Plan.Cases.Where(c => c.OrtHasIt);
    public static IEnumerable<int> ThreadValues => Plan.Threads;
    [ParamsSource(nameof(CaseValues))] public BenchCase Case { get; set; } = null!;
    [ParamsSource(nameof(ThreadValues))] public int Threads { get; set; }
    private OrtOp? _op;
    [GlobalSetup] public void Setup() => _op = new OrtOp(Case, Threads);
    [GlobalCleanup] public void Cleanup() => _op?.Dispose();
    [Benchmark] public void Run() => _op!.Run();
}

/// <summary>The lab's matrix products: a Linear layer's forward and backward (three products of the same size).</summary>
public class LabGemmBench
{
    public static IEnumerable<(int Batch, int In, int Out)> ShapeValues => [(60, 784, 100), (512, 64, 256), (512, 256, 64)];
    [ParamsSource(nameof(ShapeValues))] public (int Batch, int In, int Out) Shape { get; set; }
    private NormKit.Lab.Training.Linear<float>? _linear;
    private float[] _x = [], _dy = [];
    [GlobalSetup]
    public void Setup()
    {
        var rng = new NormKit.Lab.Training.Rng(1);
        _linear = new NormKit.Lab.Training.Linear<float>(Shape.In, Shape.Out, NormKit.Lab.Training.Init.Glorot, rng);
        _x = Enumerable.Range(0, Shape.Batch * Shape.In).Select(i => (float)(i % 7) / 7).ToArray();
        _dy = Enumerable.Range(0, Shape.Batch * Shape.Out).Select(i => (float)(i % 5) / 5 - 0.4f).ToArray();
    }
    [Benchmark] public void ForwardBackward() { _linear!.Forward(_x, Shape.Batch, true); _linear.Backward(_dy); }

    /// <summary>Floating-point operations of one call: three products of Batch x In x Out multiply-adds.</summary>
    public static double Flops((int Batch, int In, int Out) s) => 6.0 * s.Batch * s.In * s.Out;
}
