package dev.rnnstream.peers;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;

/** The ball event as it comes in, and the prediction record rnnstream writes, in Jackson's streaming API. */
final class Predictions {
  private static final JsonFactory JSON = new JsonFactory();

  /** What the model needs of an event: its features, and its label when it has one. */
  record Event(double x, double y, String direction) {}

  static Event parse(byte[] value) throws IOException {
    double x = Double.NaN;
    double y = Double.NaN;
    String direction = null;
    try (JsonParser p = JSON.createParser(value)) {
      if (p.nextToken() != JsonToken.START_OBJECT) throw new IOException("not a JSON object");
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String field = p.currentName();
        p.nextToken();
        switch (field) {
          case "x" -> x = p.getDoubleValue();
          case "y" -> y = p.getDoubleValue();
          case "direction" -> direction = p.getText();
          default -> p.skipChildren();
        }
      }
    }
    if (Double.isNaN(x) || Double.isNaN(y)) throw new IOException("x and y are required numbers");
    return new Event(x, y, direction);
  }

  /** The event, or null (counted, and the first one logged) when it is not a ball event: the stream goes on. */
  static Event parseOrSkip(byte[] value) {
    try {
      return parse(value);
    } catch (IOException err) {
      BallPeer.badRecord(err);
      return null;
    }
  }

  /** {"key","seq","prediction","probabilities":{...},"label","source":{"topic","partition","offset"}}, as rnnstream writes it. */
  static byte[] write(String key, long seq, String[] labels, float[] p, String label, String topic, int partition, long offset) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream(256);
    try (JsonGenerator g = JSON.createGenerator(out, JsonEncoding.UTF8)) {
      int best = 0;
      for (int i = 1; i < p.length; i++) if (p[i] > p[best]) best = i;
      g.writeStartObject();
      g.writeStringField("key", key);
      g.writeNumberField("seq", seq);
      g.writeStringField("prediction", labels[best]);
      g.writeObjectFieldStart("probabilities");
      for (int i = 0; i < p.length; i++) g.writeNumberField(labels[i], p[i]);
      g.writeEndObject();
      if (label != null) g.writeStringField("label", label);
      g.writeObjectFieldStart("source");
      g.writeStringField("topic", topic);
      g.writeNumberField("partition", partition);
      g.writeStringField("offset", Long.toString(offset));
      g.writeEndObject();
      g.writeEndObject();
    }
    return out.toByteArray();
  }

  /** A key's stored value: its step count, then its state floats. */
  static byte[] encodeState(long seq, float[] state) {
    ByteBuffer b = ByteBuffer.allocate(8 + 4 * state.length);
    b.putLong(seq);
    for (float f : state) b.putFloat(f);
    return b.array();
  }

  /** The step count of a stored value, and its state into `state`; 0 (and zeros) for none. */
  static long decodeState(byte[] stored, float[] state) {
    if (stored == null) {
      java.util.Arrays.fill(state, 0f);
      return 0;
    }
    ByteBuffer b = ByteBuffer.wrap(stored);
    long seq = b.getLong();
    for (int i = 0; i < state.length; i++) state[i] = b.getFloat();
    return seq;
  }

  private Predictions() {}
}
