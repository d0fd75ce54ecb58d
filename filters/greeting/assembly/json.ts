/**
 * A small JSON reader: just enough to take one string field out of the
 * filter's configuration object, skipping every other value correctly.
 */

/** What reading one string field of a JSON object found. */
export class StringField {
  /** True when the text is a well-formed JSON object. */
  valid: bool = false;
  /** True when the object has the field. */
  present: bool = false;
  /** True when the field's value is a string. */
  isString: bool = false;
  /** The decoded string value (empty unless isString). */
  value: string = "";
}

class Reader {
  text: string;
  pos: i32 = 0;

  constructor(text: string) {
    this.text = text;
  }

  atEnd(): bool {
    return this.pos >= this.text.length;
  }

  peek(): i32 {
    return this.atEnd() ? -1 : this.text.charCodeAt(this.pos);
  }

  skipSpace(): void {
    while (!this.atEnd()) {
      const c = this.peek();
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) {
        return;
      }
      this.pos++;
    }
  }

  expect(c: i32): bool {
    this.skipSpace();
    if (this.peek() != c) {
      return false;
    }
    this.pos++;
    return true;
  }

  hexDigit(c: i32): i32 {
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
    if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
    return -1;
  }

  /** Reads a string starting at the opening quote; returns null when malformed. */
  readString(): string | null {
    if (!this.expect(0x22)) {
      return null;
    }
    let out = "";
    let runStart = this.pos;
    while (!this.atEnd()) {
      const c = this.peek();
      if (c == 0x22) {
        out += this.text.substring(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) {
        return null;
      }
      if (c != 0x5c) {
        this.pos++;
        continue;
      }
      out += this.text.substring(runStart, this.pos);
      this.pos++;
      const e = this.peek();
      this.pos++;
      if (e == 0x22 || e == 0x5c || e == 0x2f) {
        out += String.fromCharCode(e);
      } else if (e == 0x62) {
        out += "\b";
      } else if (e == 0x66) {
        out += "\f";
      } else if (e == 0x6e) {
        out += "\n";
      } else if (e == 0x72) {
        out += "\r";
      } else if (e == 0x74) {
        out += "\t";
      } else if (e == 0x75) {
        if (this.pos + 4 > this.text.length) {
          return null;
        }
        let unit = 0;
        for (let i = 0; i < 4; i++) {
          const d = this.hexDigit(this.text.charCodeAt(this.pos + i));
          if (d < 0) {
            return null;
          }
          unit = (unit << 4) | d;
        }
        this.pos += 4;
        out += String.fromCharCode(unit);
      } else {
        return null;
      }
      runStart = this.pos;
    }
    return null;
  }

  skipLiteral(word: string): bool {
    if (this.text.substr(this.pos, word.length) != word) {
      return false;
    }
    this.pos += word.length;
    return true;
  }

  skipNumber(): bool {
    const start = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    let digits = 0;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) { this.pos++; digits++; }
    if (digits == 0) return false;
    if (this.peek() == 0x2e) {
      this.pos++;
      digits = 0;
      while (this.peek() >= 0x30 && this.peek() <= 0x39) { this.pos++; digits++; }
      if (digits == 0) return false;
    }
    if (this.peek() == 0x65 || this.peek() == 0x45) {
      this.pos++;
      if (this.peek() == 0x2b || this.peek() == 0x2d) this.pos++;
      digits = 0;
      while (this.peek() >= 0x30 && this.peek() <= 0x39) { this.pos++; digits++; }
      if (digits == 0) return false;
    }
    return this.pos > start;
  }

  /** Skips any JSON value; returns false when malformed. */
  skipValue(depth: i32): bool {
    if (depth > 64) {
      return false;
    }
    this.skipSpace();
    const c = this.peek();
    if (c == 0x22) {
      return this.readString() !== null;
    }
    if (c == 0x7b) {
      this.pos++;
      if (this.expect(0x7d)) return true;
      do {
        if (this.readString() === null) return false;
        if (!this.expect(0x3a)) return false;
        if (!this.skipValue(depth + 1)) return false;
      } while (this.expect(0x2c));
      return this.expect(0x7d);
    }
    if (c == 0x5b) {
      this.pos++;
      if (this.expect(0x5d)) return true;
      do {
        if (!this.skipValue(depth + 1)) return false;
      } while (this.expect(0x2c));
      return this.expect(0x5d);
    }
    if (c == 0x74) return this.skipLiteral("true");
    if (c == 0x66) return this.skipLiteral("false");
    if (c == 0x6e) return this.skipLiteral("null");
    return this.skipNumber();
  }
}

/**
 * Reads the top-level field C{name} of the JSON object in C{text}.
 * The last occurrence wins when a key repeats, as in most JSON libraries.
 */
export function readStringField(text: string, name: string): StringField {
  const result = new StringField();
  const reader = new Reader(text);
  if (!reader.expect(0x7b)) {
    return result;
  }
  if (!reader.expect(0x7d)) {
    do {
      const key = reader.readString();
      if (key === null) return result;
      if (!reader.expect(0x3a)) return result;
      reader.skipSpace();
      if (key == name && reader.peek() == 0x22) {
        const value = reader.readString();
        if (value === null) return result;
        result.present = true;
        result.isString = true;
        result.value = value;
      } else {
        if (key == name) {
          result.present = true;
          result.isString = false;
          result.value = "";
        }
        if (!reader.skipValue(0)) return result;
      }
    } while (reader.expect(0x2c));
    if (!reader.expect(0x7d)) return result;
  }
  reader.skipSpace();
  result.valid = reader.atEnd();
  return result;
}
