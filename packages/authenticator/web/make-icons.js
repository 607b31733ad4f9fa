// Draws the app's icons (public/icons/icon-192.png, icon-512.png): a mosaic tile, the
// "tessera" of the name, on the app's blue. Plain PNG written with node:zlib, no
// dependency; run it again only to change the design: `node packages/authenticator/web/make-icons.js`.
import { mkdirSync, writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";

const here = new URL("./public/icons/", import.meta.url);

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "ascii");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function png(size, pixel) {
  const rows = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    rows[y * (size * 4 + 1)] = 0; // filter: none
    for (let x = 0; x < size; x++) {
      const [r, g, b, a] = pixel(x + 0.5, y + 0.5);
      rows.set([r, g, b, a], y * (size * 4 + 1) + 1 + x * 4);
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 6, 0, 0, 0], 8); // 8-bit RGBA
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", header), chunk("IDAT", deflateSync(rows)), chunk("IEND", Buffer.alloc(0))]);
}

/** Signed distance to a rounded rectangle centred at (cx, cy). */
function roundedBox(x, y, cx, cy, half, radius) {
  const dx = Math.max(Math.abs(x - cx) - half + radius, 0);
  const dy = Math.max(Math.abs(y - cy) - half + radius, 0);
  return Math.hypot(dx, dy) - radius;
}

const BLUE = [51, 70, 200];
const WHITE = [255, 255, 255];
const GOLD = [255, 196, 61];

function icon(size) {
  // Full-bleed background (maskable-safe); four tiles inside the central 60%.
  const tile = size * 0.14;
  const gap = size * 0.045;
  const centres = [-1, 1].map((s) => size / 2 + s * (tile + gap / 2));
  return png(size, (x, y) => {
    let colour = BLUE;
    centres.forEach((cy, row) =>
      centres.forEach((cx, column) => {
        // Coverage of this pixel by the tile, for smooth edges.
        const cover = Math.min(Math.max(0.5 - roundedBox(x, y, cx, cy, tile, size * 0.03), 0), 1);
        const ink = row === 0 && column === 1 ? GOLD : WHITE;
        if (cover > 0) colour = colour.map((value, i) => Math.round(value + (ink[i] - value) * cover));
      }),
    );
    return [...colour, 255];
  });
}

mkdirSync(here, { recursive: true });
for (const size of [192, 512]) writeFileSync(new URL(`icon-${size}.png`, here), icon(size));
