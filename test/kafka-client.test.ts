/** kafkajs's ERROR entries, sorted: retried broker errors are debug, kafkajs's restarts warnings, the rest errors. */
import { describe, expect, it } from 'vitest';
import { kafkajsErrorLevel, RETRIABLE_BROKER_ERRORS } from '../src/adapters/kafka/cluster/client.js';

const LOADING = "The coordinator is loading and hence can't process requests for this group";

describe('kafkajs log levels', () => {
  it("reads kafkajs's table of retriable broker errors", () => {
    expect(RETRIABLE_BROKER_ERRORS.has(LOADING)).toBe(true);
    expect(RETRIABLE_BROKER_ERRORS.has('This server is not the leader for that topic-partition')).toBe(true);
    expect(RETRIABLE_BROKER_ERRORS.has('The request included a message larger than the max message size the server will accept')).toBe(false);
  });

  it('sends retried broker responses to debug, whether the error is a field or the first line of a stack', () => {
    expect(kafkajsErrorLevel({ broker: 'b:9092', error: LOADING, correlationId: 2 })).toBe('debug');
    expect(kafkajsErrorLevel({ groupId: 'g', stack: `KafkaJSProtocolError: ${LOADING}\n    at createErrorFromCode (...)` })).toBe('debug');
  });

  it("makes kafkajs's own 'restarting in N ms' a warning and keeps everything else an error", () => {
    expect(kafkajsErrorLevel({ groupId: 'g', retryCount: 0, retryTime: 100 })).toBe('warn');
    expect(kafkajsErrorLevel({ broker: '127.0.0.1:1', stack: 'Error: connect ECONNREFUSED 127.0.0.1:1\n    at TCPConnectWrap' })).toBe('warn');
    // Not retriable: an error even though kafkajs says it will retry.
    expect(kafkajsErrorLevel({ error: 'The request included a message larger than the max message size the server will accept', retryTime: 271 })).toBe('error');
    expect(kafkajsErrorLevel({ error: 'SASL SCRAM SHA512 authentication failed' })).toBe('error');
  });
});
