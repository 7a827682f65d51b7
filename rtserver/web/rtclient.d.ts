// Types of rtclient.js (the rtserver browser client). Frames follow docs/protocol.md.

export type Transport = "websocket" | "sse" | "poll";
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "stopped";
export type CloseAction = "resume" | "refresh_token" | "stop";

export interface EvtFrame {
  op: "evt";
  event: string;
  room: string;
  id: string;
  ts: number;
  data: Record<string, unknown>;
  /** Durable events only: where to resume from. */
  cursor?: string;
  /** Coalesced frames: how many events this one merged. */
  merged?: number;
}

export interface HelloFrame {
  op: "hello";
  session: string;
  rooms: string[];
  heartbeat_s: number;
  ns?: string;
  user?: string;
  expires_at?: number;
  recovered?: boolean;
  cursor: string;
}

export interface ReplyFrame {
  op: "ack" | "pong" | "error";
  ref?: number;
  room?: string;
  event?: string;
  code?: number;
  message?: string;
  temporary?: boolean;
}

export declare class Closed extends Error {
  code: number;
  reason: string;
  action: CloseAction;
}

export interface RtClientOptions {
  /** Returns a token (called again after a close asking for a fresh one). */
  getToken: () => string | Promise<string>;
  /** Server origin, e.g. "https://rt.example"; default: the page's origin. */
  url?: string;
  /** "hub" (staff) or "portal" (patients); default "hub". */
  ns?: string;
  /** Rooms to join besides the token's own. */
  rooms?: string[];
  /** Transports in order of preference; default ["websocket", "sse", "poll"]. */
  transports?: Transport[];
  /** Failed attempts in a row after which the next transport is tried; default 2. */
  fallbackAfter?: number;
  /** The same for a transport that opened here before (an outage fails them all); default 10. */
  fallbackAfterOpened?: number;
  /** A connection not open within this many ms counts as failed; default 8000. */
  openTimeoutMs?: number;
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** How many delivered event ids are remembered to drop repeats; default 5000. */
  seenIds?: number;
}

export interface RtClientEvents {
  event: EvtFrame;
  hello: HelloFrame;
  /** The cursor could not be resumed: reload the application's state. */
  reset: HelloFrame;
  state: ConnectionState;
  transport: Transport;
  close: Closed;
  error: unknown;
}

export declare class RtClient {
  constructor(options: RtClientOptions);
  readonly state: ConnectionState;
  readonly transport: Transport | null;
  readonly cursor: string | null;
  readonly session: string | null;
  readonly hello: HelloFrame | null;
  readonly rooms: Set<string>;
  start(): this;
  stop(): void;
  subscribe(room: string): Promise<ReplyFrame>;
  unsubscribe(room: string): Promise<ReplyFrame>;
  /** Resolves with the ack; rejects with the error frame. */
  emit(event: string, data?: Record<string, unknown>, room?: string): Promise<ReplyFrame>;
  on<K extends keyof RtClientEvents>(event: K, fn: (value: RtClientEvents[K]) => void): () => void;
  /** Any event type of the catalog, e.g. "appointment.created". */
  on(event: string, fn: (frame: EvtFrame) => void): () => void;
}

export declare function actionFor(code: number): CloseAction;
