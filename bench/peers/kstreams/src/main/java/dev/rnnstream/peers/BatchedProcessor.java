package dev.rnnstream.peers;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Peer B: the best Kafka Streams can do, batching across keys. Records are buffered and, every
 * `batchMs` (a wall-clock punctuator) or `batchRecords` records, stepped with one ORT call per
 * wave: a wave holds each buffered key once, in the order its records came, so a key with
 * several buffered records is stepped once per wave, in order.
 *
 * The buffer is durable: each record also goes to a change-logged store (`pending`), keyed by
 * its input offset, and leaves it when its prediction is forwarded. Kafka Streams commits a
 * record's offset once process() returns, so an in-memory buffer would lose the records in it on
 * a crash (at least once) or commit them without their outputs (exactly once); Kafka Streams' own
 * suppress() buffers in a change-logged store for the same reason. A restarted task steps what
 * its pending store still holds first.
 */
final class BatchedProcessor implements Processor<String, byte[], String, byte[]> {
  private record Pending(long offset, String key, byte[] value, long timestamp, Predictions.Event event) {}

  private final BallModel model;
  private final int batchRecords;
  private final Duration batchInterval;
  private final List<Pending> buffer = new ArrayList<>();
  private ProcessorContext<String, byte[]> context;
  private KeyValueStore<String, byte[]> states;
  private KeyValueStore<Long, byte[]> pending;
  private String topic;
  private int partition;

  BatchedProcessor(BallModel model, int batchRecords, Duration batchInterval) {
    this.model = model;
    this.batchRecords = batchRecords;
    this.batchInterval = batchInterval;
  }

  @Override
  public void init(ProcessorContext<String, byte[]> context) {
    this.context = context;
    this.states = context.getStateStore(BallPeer.STATE_STORE);
    this.pending = context.getStateStore(BallPeer.PENDING_STORE);
    this.partition = context.taskId().partition();
    this.topic = BallPeer.inputTopic;
    // Records buffered before a crash, in input order (big-endian longs sort by value).
    try (KeyValueIterator<Long, byte[]> it = pending.all()) {
      while (it.hasNext()) {
        KeyValue<Long, byte[]> kv = it.next();
        buffer.add(decode(kv.key, kv.value));
      }
    }
    context.schedule(batchInterval, PunctuationType.WALL_CLOCK_TIME, now -> flush());
  }

  @Override
  public void process(Record<String, byte[]> record) {
    Predictions.Event e = Predictions.parseOrSkip(record.value());
    if (e == null) return;
    long offset = context.recordMetadata().orElseThrow().offset();
    Pending p = new Pending(offset, record.key(), record.value(), record.timestamp(), e);
    pending.put(offset, encode(p));
    buffer.add(p);
    if (buffer.size() >= batchRecords) flush();
  }

  /** Steps every buffered record, wave by wave, and forwards their predictions. */
  private void flush() {
    if (buffer.isEmpty()) return;
    // Wave w holds the w-th buffered record of each key.
    Map<String, Integer> seen = new HashMap<>();
    List<List<Pending>> waves = new ArrayList<>();
    for (Pending p : buffer) {
      int w = seen.merge(p.key(), 1, Integer::sum) - 1;
      if (w == waves.size()) waves.add(new ArrayList<>());
      waves.get(w).add(p);
    }
    Map<String, Long> seqs = new HashMap<>();
    Map<String, float[]> held = new HashMap<>();
    try {
      for (List<Pending> wave : waves) {
        int batch = wave.size();
        double[] x = new double[batch * model.features];
        float[][] state = new float[batch][];
        long[] seq = new long[batch];
        for (int b = 0; b < batch; b++) {
          Pending p = wave.get(b);
          float[] s = held.get(p.key());
          if (s == null) {
            s = new float[model.stateSize];
            seqs.put(p.key(), Predictions.decodeState(states.get(p.key()), s));
            held.put(p.key(), s);
          }
          state[b] = s;
          seq[b] = seqs.merge(p.key(), 1L, Long::sum);
          x[b * model.features] = p.event().x();
          x[b * model.features + 1] = p.event().y();
        }
        float[][] probabilities = model.step(batch, x, state);
        for (int b = 0; b < batch; b++) {
          Pending p = wave.get(b);
          byte[] out = Predictions.write(p.key(), seq[b], model.labels, probabilities[b], p.event().direction(), topic, partition, p.offset());
          context.forward(new Record<>(p.key(), out, p.timestamp()));
        }
      }
      for (Map.Entry<String, float[]> e : held.entrySet()) states.put(e.getKey(), Predictions.encodeState(seqs.get(e.getKey()), e.getValue()));
      for (Pending p : buffer) pending.delete(p.offset());
      buffer.clear();
    } catch (Exception err) {
      throw new RuntimeException(err);
    }
  }

  private static byte[] encode(Pending p) {
    byte[] key = p.key().getBytes(StandardCharsets.UTF_8);
    return ByteBuffer.allocate(8 + 4 + key.length + p.value().length).putLong(p.timestamp()).putInt(key.length).put(key).put(p.value()).array();
  }

  private static Pending decode(long offset, byte[] bytes) {
    ByteBuffer b = ByteBuffer.wrap(bytes);
    long timestamp = b.getLong();
    byte[] key = new byte[b.getInt()];
    b.get(key);
    byte[] value = new byte[b.remaining()];
    b.get(value);
    try {
      return new Pending(offset, new String(key, StandardCharsets.UTF_8), value, timestamp, Predictions.parse(value));
    } catch (IOException err) {
      throw new IllegalStateException("a pending record that parsed when buffered no longer does", err);
    }
  }
}
