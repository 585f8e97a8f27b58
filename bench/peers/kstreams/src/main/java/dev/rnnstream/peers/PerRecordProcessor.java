package dev.rnnstream.peers;

import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * Peer A: what a Kafka Streams user writes first. Per record: read the key's state from the
 * store, run the model for that one key, write the prediction, put the new state back.
 */
final class PerRecordProcessor implements Processor<String, byte[], String, byte[]> {
  private final BallModel model;
  private final double[] x;
  private final float[][] state;
  private ProcessorContext<String, byte[]> context;
  private KeyValueStore<String, byte[]> states;

  PerRecordProcessor(BallModel model) {
    this.model = model;
    this.x = new double[model.features];
    this.state = new float[1][model.stateSize];
  }

  @Override
  public void init(ProcessorContext<String, byte[]> context) {
    this.context = context;
    this.states = context.getStateStore(BallPeer.STATE_STORE);
  }

  @Override
  public void process(Record<String, byte[]> record) {
    Predictions.Event e = Predictions.parseOrSkip(record.value());
    if (e == null) return;
    try {
      long seq = Predictions.decodeState(states.get(record.key()), state[0]) + 1;
      x[0] = e.x();
      x[1] = e.y();
      float[][] p = model.step(1, x, state);
      states.put(record.key(), Predictions.encodeState(seq, state[0]));
      RecordMetadata m = context.recordMetadata().orElseThrow();
      context.forward(record.withValue(Predictions.write(record.key(), seq, model.labels, p[0], e.direction(), m.topic(), m.partition(), m.offset())));
    } catch (Exception err) {
      throw new RuntimeException(err);
    }
  }
}
