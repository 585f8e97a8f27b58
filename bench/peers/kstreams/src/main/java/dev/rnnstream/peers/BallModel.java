package dev.rnnstream.peers;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.DoubleBuffer;
import java.nio.FloatBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The ball model as `rnnstream export` writes it: one step of every layer and the head, for a
 * batch of keys, with each layer's state as explicit inputs and outputs. What the inputs, outputs
 * and state are is read from the file's metadata (rnnstream.*), not assumed.
 */
final class BallModel implements AutoCloseable {
  /** One state input of the graph and the output that feeds it at the key's next step. */
  record State(String input, String output, int size) {}

  final OrtEnvironment env;
  final OrtSession session;
  final List<State> states = new ArrayList<>();
  final String[] labels;
  final String output;
  final int features;
  /** Floats of one key's state: every State's size, in order. */
  final int stateSize;

  BallModel(Path file, int intraOpThreads) throws Exception {
    env = OrtEnvironment.getEnvironment();
    OrtSession.SessionOptions options = new OrtSession.SessionOptions();
    options.setIntraOpNumThreads(intraOpThreads);
    options.setInterOpNumThreads(1);
    options.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
    session = env.createSession(Files.readAllBytes(file), options);
    Map<String, String> meta = session.getMetadata().getCustomMetadata();
    ObjectMapper json = new ObjectMapper();
    int size = 0;
    for (JsonNode s : json.readTree(meta.get("rnnstream.state"))) {
      states.add(new State(s.get("input").asText(), s.get("output").asText(), s.get("size").asInt()));
      size += s.get("size").asInt();
    }
    stateSize = size;
    JsonNode outputs = json.readTree(meta.get("rnnstream.outputs"));
    labels = new String[outputs.size()];
    for (int i = 0; i < labels.length; i++) labels[i] = outputs.get(i).asText();
    features = json.readTree(meta.get("rnnstream.features")).size();
    output = "softmax".equals(meta.get("rnnstream.head")) ? "probabilities" : "outputs";
  }

  /**
   * One step for `batch` keys: `x` is [batch][features] raw features (float64: the graph normalises
   * them in float64, as rnnstream does), `state` [batch][stateSize]
   * each key's state (the States' blocks in order), replaced by the next state; returns
   * [batch][labels] probabilities.
   */
  float[][] step(int batch, double[] x, float[][] state) throws OrtException {
    Map<String, OnnxTensor> feeds = new HashMap<>();
    try {
      feeds.put("features", OnnxTensor.createTensor(env, DoubleBuffer.wrap(x, 0, batch * features), new long[] {batch, features}));
      int offset = 0;
      for (State s : states) {
        float[] block = new float[batch * s.size()];
        for (int b = 0; b < batch; b++) System.arraycopy(state[b], offset, block, b * s.size(), s.size());
        feeds.put(s.input(), OnnxTensor.createTensor(env, FloatBuffer.wrap(block), new long[] {1, batch, s.size()}));
        offset += s.size();
      }
      try (OrtSession.Result r = session.run(feeds)) {
        offset = 0;
        for (State s : states) {
          float[][][] next = (float[][][]) r.get(s.output()).get().getValue();
          for (int b = 0; b < batch; b++) System.arraycopy(next[0][b], 0, state[b], offset, s.size());
          offset += s.size();
        }
        return (float[][]) r.get(output).get().getValue();
      }
    } finally {
      for (OnnxTensor t : feeds.values()) t.close();
    }
  }

  @Override
  public void close() throws OrtException {
    session.close();
  }
}
