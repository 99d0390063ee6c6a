using System.Numerics.Tensors;
using NormKit;
using NormKit.Layers;
using NormKit.Serialization;

// Exercises the layers, the functional API, mixed precision and the state files under NativeAOT.
var bn = new BatchNorm2d<float>(3);
var x = Tensor.Create(Enumerable.Range(0, 2 * 3 * 2 * 2).Select(i => (float)(i % 7)).ToArray(), [2, 3, 2, 2]);
var y = bn.Forward(x);
bn.Backward(y);
var ln = new LayerNorm<float>(4);
var h = new float[] { 1, 2, 3, 4 };
var o = new float[4];
ln.Forward(h, [1, 4], o);
var half = new Half[4];
Mixed.RmsNorm<Half>(h.Select(v => (Half)v).ToArray(), [1, 4], [4], half);
string path = Path.Combine(Path.GetTempPath(), $"normkit-aot-{Environment.ProcessId}.safetensors");
StateDict.Save(path, ("bn", (NormLayer<float>)bn), ("ln", ln));
var copy = new BatchNorm2d<float>(3);
StateDict.Load(path, ("bn", (NormLayer<float>)copy), ("ln", new LayerNorm<float>(4)));
File.Delete(path);
bool same = copy.NumBatchesTracked == 1 && Guard(copy.RunningVar!).SequenceEqual(Guard(bn.RunningVar!));
Console.WriteLine($"LayerNorm [1,2,3,4] -> [{string.Join(", ", o.Select(v => v.ToString("F4")))}]");
Console.WriteLine($"RMSNorm in Half -> [{string.Join(", ", half)}]");
Console.WriteLine(same ? "state round trip ok" : "state round trip FAILED");
return same ? 0 : 1;

static float[] Guard(Tensor<float> t) => t.ToArray();
