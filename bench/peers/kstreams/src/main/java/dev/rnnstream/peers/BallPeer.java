package dev.rnnstream.peers;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.ProcessorSupplier;
import org.apache.kafka.streams.state.KeyValueBytesStoreSupplier;
import org.apache.kafka.streams.state.Stores;

/**
 * The ball model as a Kafka Streams application (peers A and B of `npm run bench:peers`; see
 * bench/peers/README.md). Options, all `-name value`:
 *
 *   -brokers h:p,...  -input topic  -output topic  -application-id id  -model ball.onnx
 *   -mode per-record|batched      A: one ORT call per record; B: batches across keys
 *   -store rocksdb|memory         the state store (both change-logged, as Kafka Streams makes them)
 *   -guarantee at_least_once|exactly_once_v2
 *   -commit-interval ms           as rnnstream's (1000 at least once, 100 exactly once)
 *   -stream-threads n  -ort-threads n
 *   -batch-ms ms  -batch-records n   (batched only: flush every ms or n records)
 *   -state-dir dir
 */
public final class BallPeer {
  static final String STATE_STORE = "ball-state";
  static final String PENDING_STORE = "ball-pending";
  static String inputTopic;
  private static final AtomicLong BAD_RECORDS = new AtomicLong();

  static void badRecord(Exception err) {
    if (BAD_RECORDS.incrementAndGet() == 1) System.err.println("a record that is not a ball event was skipped: " + err.getMessage());
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> o = new HashMap<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      if (!args[i].startsWith("-")) throw new IllegalArgumentException("expected -name value pairs, got " + args[i]);
      o.put(args[i].substring(1), args[i + 1]);
    }
    return o;
  }

  private static String required(Map<String, String> o, String name) {
    String v = o.get(name);
    if (v == null) throw new IllegalArgumentException("-" + name + " is required");
    return v;
  }

  private static KeyValueBytesStoreSupplier store(String kind, String name) {
    return switch (kind) {
      case "rocksdb" -> Stores.persistentKeyValueStore(name);
      case "memory" -> Stores.inMemoryKeyValueStore(name);
      default -> throw new IllegalArgumentException("-store: expected rocksdb or memory, got " + kind);
    };
  }

  public static void main(String[] args) throws Exception {
    Map<String, String> o = parse(args);
    inputTopic = required(o, "input");
    String mode = o.getOrDefault("mode", "per-record");
    String storeKind = o.getOrDefault("store", "rocksdb");
    String guarantee = o.getOrDefault("guarantee", StreamsConfig.AT_LEAST_ONCE);
    BallModel model = new BallModel(Path.of(required(o, "model")), Integer.parseInt(o.getOrDefault("ort-threads", "1")));

    StreamsBuilder builder = new StreamsBuilder();
    builder.addStateStore(Stores.keyValueStoreBuilder(store(storeKind, STATE_STORE), Serdes.String(), Serdes.ByteArray()));
    ProcessorSupplier<String, byte[], String, byte[]> processor;
    if (mode.equals("batched")) {
      builder.addStateStore(Stores.keyValueStoreBuilder(store(storeKind, PENDING_STORE), Serdes.Long(), Serdes.ByteArray()));
      int records = Integer.parseInt(o.getOrDefault("batch-records", "1024"));
      Duration interval = Duration.ofMillis(Long.parseLong(o.getOrDefault("batch-ms", "5")));
      processor = () -> new BatchedProcessor(model, records, interval);
      builder.stream(inputTopic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
          .process(processor, STATE_STORE, PENDING_STORE)
          .to(required(o, "output"), Produced.with(Serdes.String(), Serdes.ByteArray()));
    } else if (mode.equals("per-record")) {
      processor = () -> new PerRecordProcessor(model);
      builder.stream(inputTopic, Consumed.with(Serdes.String(), Serdes.ByteArray()))
          .process(processor, STATE_STORE)
          .to(required(o, "output"), Produced.with(Serdes.String(), Serdes.ByteArray()));
    } else {
      throw new IllegalArgumentException("-mode: expected per-record or batched, got " + mode);
    }

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, required(o, "application-id"));
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, required(o, "brokers"));
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, o.getOrDefault("commit-interval", guarantee.equals(StreamsConfig.AT_LEAST_ONCE) ? "1000" : "100"));
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, o.getOrDefault("stream-threads", "1"));
    p.put(StreamsConfig.STATE_DIR_CONFIG, o.getOrDefault("state-dir", Files.createTempDirectory("kstreams-").toString()));
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // Kafka Streams raises its producers' linger.ms to 100; the 4.x client default of 5 keeps a
    // record's latency comparable to rnnstream's (which sends as soon as a micro-batch is stepped).
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), o.getOrDefault("linger-ms", "5"));
    KafkaStreams streams = new KafkaStreams(builder.build(), p);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close(Duration.ofSeconds(30));
      stopped.countDown();
    }));
    streams.setUncaughtExceptionHandler(err -> {
      System.err.println("stream thread failed: " + err);
      return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.start();
    System.err.println("BallPeer started: mode=" + mode + " store=" + storeKind + " guarantee=" + guarantee + " stream-threads=" + p.get(StreamsConfig.NUM_STREAM_THREADS_CONFIG) + " commit-interval=" + p.get(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG));
    stopped.await();
    model.close();
  }

  private BallPeer() {}
}
