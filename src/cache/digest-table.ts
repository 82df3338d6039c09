// A bounded cache table keyed by SHA-256 digests, stored in typed arrays instead of JS objects.
//
// Why: the JWT and API-key caches hold up to hundreds of thousands of entries. As JS objects
// (a Map entry, a digest string, an entry object, a principal, a subject string...) each cost
// 300–500 bytes of V8 heap and every major GC walks them. Here an entry is a digest, a few float64
// fields and its short texts in one fixed-size slot (~180 bytes), allocated once for the whole
// capacity and invisible to the garbage collector; a cache of 100k entries is a handful of
// ArrayBuffers.
//
// - Index: open addressing with linear probing over the digest's first word (SHA-256 output, so
//   the distribution is uniform and cannot be steered), at most half full, backward-shift
//   deletion (no tombstones).
// - Eviction: CLOCK (second chance), an LRU approximation without pointer updates on hits. New
//   entries start unreferenced, so entries seen only once (a spray) go before entries that were hit.
// - Texts: UTF-8 in the slot's text area. A value that does not fit or would not survive the round
//   trip exactly is not squeezed: the caller pins its object on the heap instead (see pin()).
// - Materialized objects: callers turn a slot back into the object their callers expect (a
//   principal, say). The last few thousand are kept (a FIFO ring), so hot entries are answered
//   with the same object every time and allocate nothing.

/** Texts longer than this many UTF-8 bytes are never stored inline. */
const MAX_TEXT_BYTES = 254;
const ABSENT = 255;
const DIGEST_WORDS = 8;

export interface DigestTableLayout {
  /** Float64 fields per entry (NaN is free to mean "absent"). */
  readonly numbers: number;
  /** Texts per entry, each a string or undefined. */
  readonly texts: number;
  /** Bytes of UTF-8 text per entry, shared by its texts. */
  readonly textBytes: number;
  /** Materialized objects kept (default min(capacity, 4096)). */
  readonly keep?: number;
}

export class DigestTable<T> {
  readonly capacity: number;
  private readonly layout: DigestTableLayout;
  /** Entry digests, DIGEST_WORDS int32 per slot. */
  private readonly digests: Int32Array;
  /** Slot + 1 per cell; 0 is an empty cell. */
  private readonly index: Int32Array;
  private readonly mask: number;
  private readonly numbers: Float64Array;
  private readonly textLengths: Uint8Array;
  private readonly textData: Buffer;
  private readonly occupied: Uint8Array;
  private readonly referenced: Uint8Array;
  private readonly pinned: Uint8Array;
  private readonly objects: (T | undefined)[];
  /** Slots whose objects were kept most recently (FIFO); -1 where none. */
  private readonly ring: Int32Array;
  private ringAt = 0;
  private readonly freeSlots: Int32Array;
  private freeCount = 0;
  /** Slots below this have been used at least once. */
  private used = 0;
  private hand = 0;
  private count = 0;
  /** The digest being looked up, as int32 words. */
  private readonly probe = new Int32Array(DIGEST_WORDS);

  constructor(capacity: number, layout: DigestTableLayout) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
    this.layout = layout;
    let cells = 2;
    while (cells < capacity * 2) cells *= 2;
    this.index = new Int32Array(cells);
    this.mask = cells - 1;
    this.digests = new Int32Array(capacity * DIGEST_WORDS);
    this.numbers = new Float64Array(capacity * layout.numbers);
    this.textLengths = new Uint8Array(capacity * layout.texts);
    this.textData = Buffer.alloc(capacity * layout.textBytes);
    this.occupied = new Uint8Array(capacity);
    this.referenced = new Uint8Array(capacity);
    this.pinned = new Uint8Array(capacity);
    this.objects = new Array<T | undefined>(capacity).fill(undefined);
    this.ring = new Int32Array(Math.max(1, Math.min(capacity, layout.keep ?? 4096))).fill(-1);
    this.freeSlots = new Int32Array(capacity);
  }

  get size(): number {
    return this.count;
  }

  /**
   * The slot holding `digest` (a SHA-256 as a 32-character binary string, which node:crypto makes
   * without the Buffer allocation a byte digest costs), or -1. Marks the entry as recently used.
   */
  find(digest: string): number {
    const slot = this.locate(digest);
    if (slot >= 0) this.referenced[slot] = 1;
    return slot;
  }

  /**
   * A slot for `digest`, emptied of what it held (its own earlier entry, or another one evicted to
   * make room): the caller writes the entry's fields next.
   */
  claim(digest: string): number {
    let slot = this.locate(digest);
    if (slot >= 0) {
      this.reset(slot);
      return slot;
    }
    slot = this.freeSlot();
    const base = slot * DIGEST_WORDS;
    for (let i = 0; i < DIGEST_WORDS; i++) this.digests[base + i] = this.probe[i]!;
    let cell = this.probe[0]! & this.mask;
    while (this.index[cell] !== 0) cell = (cell + 1) & this.mask;
    this.index[cell] = slot + 1;
    this.occupied[slot] = 1;
    this.referenced[slot] = 0;
    this.count++;
    return slot;
  }

  remove(slot: number): void {
    if (!this.occupied[slot]) return;
    this.unindex(slot);
    this.reset(slot);
    this.occupied[slot] = 0;
    this.freeSlots[this.freeCount++] = slot;
    this.count--;
  }

  clear(): void {
    this.index.fill(0);
    this.occupied.fill(0);
    this.pinned.fill(0);
    this.objects.fill(undefined);
    this.ring.fill(-1);
    this.freeCount = 0;
    this.used = 0;
    this.hand = 0;
    this.count = 0;
  }

  /** Calls `visit` with every occupied slot; it may remove the slot it is given. */
  forEachSlot(visit: (slot: number) => void): void {
    for (let slot = 0; slot < this.used; slot++) if (this.occupied[slot]) visit(slot);
  }

  number(slot: number, field: number): number {
    return this.numbers[slot * this.layout.numbers + field]!;
  }

  setNumber(slot: number, field: number, value: number): void {
    this.numbers[slot * this.layout.numbers + field] = value;
  }

  /**
   * Store the slot's texts. False when they do not fit, or a value would not come back identical
   * (a lone UTF-16 surrogate, say): the caller pins its object instead.
   */
  setTexts(slot: number, values: readonly (string | undefined)[]): boolean {
    const { texts, textBytes } = this.layout;
    const start = slot * textBytes;
    let offset = start;
    for (let i = 0; i < texts; i++) {
      const value = values[i];
      if (value === undefined) {
        this.textLengths[slot * texts + i] = ABSENT;
        continue;
      }
      // UTF-8 takes at most 3 bytes per UTF-16 unit; the exact size is checked by the write.
      const room = start + textBytes - offset;
      if (value.length > room || value.length > MAX_TEXT_BYTES) return this.dropTexts(slot);
      const length = Buffer.byteLength(value, 'utf8');
      if (length > room || length > MAX_TEXT_BYTES) return this.dropTexts(slot);
      this.textData.write(value, offset, length, 'utf8');
      if (this.textData.toString('utf8', offset, offset + length) !== value) return this.dropTexts(slot);
      this.textLengths[slot * texts + i] = length;
      offset += length;
    }
    return true;
  }

  private dropTexts(slot: number): false {
    const texts = this.layout.texts;
    this.textLengths.fill(ABSENT, slot * texts, slot * texts + texts);
    return false;
  }

  text(slot: number, field: number): string | undefined {
    const length = this.textLengths[slot * this.layout.texts + field]!;
    if (length === ABSENT) return undefined;
    const offset = this.textOffset(slot, field);
    return this.textData.toString('utf8', offset, offset + length);
  }

  /** Whether text `field` of the slot is exactly these UTF-8 bytes (no string is made). */
  textIs(slot: number, field: number, utf8: Uint8Array): boolean {
    const length = this.textLengths[slot * this.layout.texts + field]!;
    if (length === ABSENT || length !== utf8.length) return false;
    const offset = this.textOffset(slot, field);
    return this.textData.compare(utf8, 0, length, offset, offset + length) === 0;
  }

  /** Where text `field` of the slot starts: after the texts before it. */
  private textOffset(slot: number, field: number): number {
    const { texts, textBytes } = this.layout;
    let offset = slot * textBytes;
    for (let i = 0; i < field; i++) {
      const length = this.textLengths[slot * texts + i]!;
      if (length !== ABSENT) offset += length;
    }
    return offset;
  }

  /** The object last kept or pinned for the slot's current entry, if it is still kept. */
  object(slot: number): T | undefined {
    return this.objects[slot];
  }

  /** The slot's object: the one still kept, or one `rebuild` makes from its fields (then kept). */
  objectAt(slot: number, rebuild: (slot: number) => T): T {
    const kept = this.objects[slot];
    if (kept !== undefined) return kept;
    const made = rebuild(slot);
    this.keep(slot, made);
    return made;
  }

  /**
   * Finish a claimed slot: store its texts and keep `value` for the next hits, or pin `value` when
   * the texts cannot be stored (undefined: the caller already knows they cannot).
   */
  store(slot: number, texts: readonly (string | undefined)[] | undefined, value: T): void {
    if (texts !== undefined && this.setTexts(slot, texts)) this.keep(slot, value);
    else this.pin(slot, value);
  }

  /** Keep the object made from the slot, for the next hits (until a few thousand others are kept). */
  keep(slot: number, value: T): void {
    this.objects[slot] = value;
    const dropped = this.ring[this.ringAt]!;
    // The dropped slot may hold a newer entry by now; forgetting its object only costs a rebuild.
    if (dropped >= 0 && dropped !== slot && !this.pinned[dropped]) this.objects[dropped] = undefined;
    this.ring[this.ringAt] = slot;
    this.ringAt = (this.ringAt + 1) % this.ring.length;
  }

  /** Hold the slot's object for as long as the entry lives: its fields could not be stored. */
  pin(slot: number, value: T): void {
    this.pinned[slot] = 1;
    this.objects[slot] = value;
  }

  private locate(digest: string): number {
    if (digest.length !== DIGEST_WORDS * 4) throw new RangeError(`a digest is ${DIGEST_WORDS * 4} bytes, got ${digest.length}`);
    const probe = this.probe;
    for (let i = 0; i < DIGEST_WORDS; i++) {
      const at = i * 4;
      probe[i] = digest.charCodeAt(at) | (digest.charCodeAt(at + 1) << 8) | (digest.charCodeAt(at + 2) << 16) | (digest.charCodeAt(at + 3) << 24);
    }
    const first = probe[0]!;
    let cell = first & this.mask;
    for (;;) {
      const entry = this.index[cell]!;
      if (entry === 0) return -1;
      const base = (entry - 1) * DIGEST_WORDS;
      if (this.digests[base] === first && this.sameDigest(base)) return entry - 1;
      cell = (cell + 1) & this.mask;
    }
  }

  private sameDigest(base: number): boolean {
    for (let i = 1; i < DIGEST_WORDS; i++) if (this.digests[base + i] !== this.probe[i]) return false;
    return true;
  }

  private freeSlot(): number {
    if (this.freeCount > 0) return this.freeSlots[--this.freeCount]!;
    if (this.used < this.capacity) return this.used++;
    // Full: the first unreferenced slot under the clock hand goes, clearing reference bits on the
    // way (at most one full turn, after which every bit is clear).
    for (;;) {
      const slot = this.hand;
      this.hand = slot + 1 === this.capacity ? 0 : slot + 1;
      if (this.referenced[slot]) {
        this.referenced[slot] = 0;
        continue;
      }
      this.remove(slot);
      return this.freeSlots[--this.freeCount]!;
    }
  }

  private reset(slot: number): void {
    this.objects[slot] = undefined;
    this.pinned[slot] = 0;
  }

  /** Take the slot out of the index, shifting later cells of its probe run back (no tombstones). */
  private unindex(slot: number): void {
    const mask = this.mask;
    let hole = this.digests[slot * DIGEST_WORDS]! & mask;
    while (this.index[hole] !== slot + 1) hole = (hole + 1) & mask;
    let cell = (hole + 1) & mask;
    for (;;) {
      const entry = this.index[cell]!;
      if (entry === 0) break;
      const home = this.digests[(entry - 1) * DIGEST_WORDS]! & mask;
      // The entry may move into the hole unless its home lies cyclically in (hole, cell].
      const stays = hole <= cell ? home > hole && home <= cell : home > hole || home <= cell;
      if (!stays) {
        this.index[hole] = entry;
        hole = cell;
      }
      cell = (cell + 1) & mask;
    }
    this.index[hole] = 0;
  }
}
