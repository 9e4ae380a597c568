//! The test picture: 75 % colour bars, a grey step row and a black panel
//! with a large 7-segment clock (`HH:MM:SS.mmm`), a frame counter (`F123456`)
//! and a box that lights up while the audio test source beeps.
//!
//! Everything is drawn on a 4-pixel grid with macroblock-aligned colour edges
//! and neutral chroma in the panel, so [`super::H264Encoder`] codes it with
//! cheap intra prediction: only the first macroblock of each bar is `I_PCM`.

use super::{Frame, Yuv};
use crate::MediaError;

/// 75 % colour bars (BT.601): white, yellow, cyan, green, magenta, red, blue.
pub const BARS: [Yuv; 7] = [
    Yuv::new(180, 128, 128),
    Yuv::new(162, 44, 142),
    Yuv::new(131, 156, 44),
    Yuv::new(112, 72, 58),
    Yuv::new(84, 184, 198),
    Yuv::new(65, 100, 212),
    Yuv::new(35, 212, 114),
];

const PANEL: Yuv = Yuv::BLACK;
const INK: Yuv = Yuv::WHITE;
const BOX_OFF: Yuv = Yuv::grey(48);
const BOX_ON: Yuv = Yuv::WHITE;

/// Layout in units: panel = 2 + 9 (clock) + 2 + 9 (counter) + 2.
const PANEL_UNITS_H: u32 = 24;
/// Clock width: 9 digits × 6 + 3 separators × 2 = 60, plus margins.
const PANEL_UNITS_W: u32 = 64;
const CLOCK_UNITS_W: u32 = 60;
const GLYPH_H: u32 = 9;

/// What to draw on one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overlay {
    /// Time shown by the clock, in milliseconds (shown modulo 24 h).
    pub clock_ms: u64,
    /// Frame counter (shown modulo 1 000 000).
    pub frame: u64,
    /// Whether the beep box is lit.
    pub beep: bool,
}

/// Renders the test picture for a frame size.
#[derive(Debug, Clone)]
pub struct TestPattern {
    width: u32,
    height: u32,
    /// Pixels per font unit (a multiple of 4).
    unit: u32,
    bars_bottom: u32,
    grey_bottom: u32,
    clock_x: u32,
    clock_y: u32,
    counter_y: u32,
    background: Frame,
}

fn down4(v: u32) -> u32 {
    v / 4 * 4
}

impl TestPattern {
    /// A pattern for `width` × `height` (even, see [`Frame::new`]).
    pub fn new(width: u32, height: u32) -> Result<Self, MediaError> {
        let mut background = Frame::new(width, height)?;
        let mb_w = width.div_ceil(16);
        let mb_h = height.div_ceil(16);
        // Bars take ~9/16 of the height, then one grey macroblock row, then the panel.
        let bars_rows = (mb_h * 9 / 16).max(1);
        let grey_rows = u32::from(mb_h >= 4);
        let bars_bottom = (bars_rows * 16).min(height);
        let grey_bottom = ((bars_rows + grey_rows) * 16).min(height);
        let panel_h = height.saturating_sub(grey_bottom);
        let unit = down4((width / PANEL_UNITS_W).min(panel_h / PANEL_UNITS_H)).max(4);

        background.fill(PANEL);
        for (i, c) in BARS.iter().enumerate() {
            let x0 = (i as u32 * mb_w * 2 + 7) / 14 * 16; // round(i * mb_w / 7) MBs
            let x1 = ((i as u32 + 1) * mb_w * 2 + 7) / 14 * 16;
            background.fill_rect(x0, 0, x1.saturating_sub(x0), bars_bottom, *c);
        }
        for i in 0..8u32 {
            let x0 = (i * mb_w * 2 + 8) / 16 * 16;
            let x1 = ((i + 1) * mb_w * 2 + 8) / 16 * 16;
            let y = 16 + (i * 219 / 7) as u8;
            background.fill_rect(
                x0,
                bars_bottom,
                x1.saturating_sub(x0),
                grey_bottom - bars_bottom,
                Yuv::grey(y),
            );
        }

        let block_h = PANEL_UNITS_H * unit;
        let top = grey_bottom + down4(panel_h.saturating_sub(block_h) / 2);
        let clock_x = down4(width.saturating_sub(CLOCK_UNITS_W * unit) / 2);
        let clock_y = top + 2 * unit;
        let counter_y = clock_y + (GLYPH_H + 2) * unit;
        Ok(TestPattern {
            width,
            height,
            unit,
            bars_bottom,
            grey_bottom,
            clock_x,
            clock_y,
            counter_y,
            background,
        })
    }

    /// Frame width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Frame height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The clock's bounding box (x, y, width, height) in pixels, e.g. to
    /// check that it changes between decoded frames.
    pub fn clock_rect(&self) -> (u32, u32, u32, u32) {
        (
            self.clock_x,
            self.clock_y,
            CLOCK_UNITS_W * self.unit,
            GLYPH_H * self.unit,
        )
    }

    /// Bottom of the colour bars and of the grey row, in pixels.
    pub fn band_edges(&self) -> (u32, u32) {
        (self.bars_bottom, self.grey_bottom)
    }

    /// Draws the picture for `overlay` into `frame` (which must have the
    /// pattern's size; otherwise nothing is drawn).
    pub fn render(&self, frame: &mut Frame, overlay: &Overlay) {
        if !frame.same_dimensions(&self.background) {
            return;
        }
        frame.clone_from(&self.background);
        let ms = overlay.clock_ms % 86_400_000;
        let text = format!(
            "{:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        );
        self.draw_text(frame, self.clock_x, self.clock_y, &text);
        let counter = format!("F{:06}", overlay.frame % 1_000_000);
        self.draw_text(frame, self.clock_x, self.counter_y, &counter);
        let u = self.unit;
        let box_x = self.clock_x + (CLOCK_UNITS_W - GLYPH_H) * u;
        let colour = if overlay.beep { BOX_ON } else { BOX_OFF };
        frame.fill_rect(box_x, self.counter_y, GLYPH_H * u, GLYPH_H * u, colour);
    }

    fn draw_text(&self, frame: &mut Frame, x: u32, y: u32, text: &str) {
        let u = self.unit;
        let mut cx = x;
        for ch in text.chars() {
            let (cells, advance) = glyph(ch);
            for &(gx, gy, gw, gh) in cells {
                frame.fill_rect(cx + gx * u, y + gy * u, gw * u, gh * u, INK);
            }
            cx += advance * u;
        }
    }
}

/// 7-segment glyphs on a 5 × 9 unit cell with 1-unit strokes.
const SEG_A: (u32, u32, u32, u32) = (0, 0, 5, 1);
const SEG_B: (u32, u32, u32, u32) = (4, 0, 1, 5);
const SEG_C: (u32, u32, u32, u32) = (4, 4, 1, 5);
const SEG_D: (u32, u32, u32, u32) = (0, 8, 5, 1);
const SEG_E: (u32, u32, u32, u32) = (0, 4, 1, 5);
const SEG_F: (u32, u32, u32, u32) = (0, 0, 1, 5);
const SEG_G: (u32, u32, u32, u32) = (0, 4, 5, 1);

type Cell = (u32, u32, u32, u32);

/// The rectangles (x, y, w, h in units) of a character, and its advance.
fn glyph(ch: char) -> (&'static [Cell], u32) {
    const D0: [Cell; 6] = [SEG_A, SEG_B, SEG_C, SEG_D, SEG_E, SEG_F];
    const D1: [Cell; 2] = [SEG_B, SEG_C];
    const D2: [Cell; 5] = [SEG_A, SEG_B, SEG_G, SEG_E, SEG_D];
    const D3: [Cell; 5] = [SEG_A, SEG_B, SEG_G, SEG_C, SEG_D];
    const D4: [Cell; 4] = [SEG_F, SEG_G, SEG_B, SEG_C];
    const D5: [Cell; 5] = [SEG_A, SEG_F, SEG_G, SEG_C, SEG_D];
    const D6: [Cell; 6] = [SEG_A, SEG_F, SEG_G, SEG_E, SEG_C, SEG_D];
    const D7: [Cell; 3] = [SEG_A, SEG_B, SEG_C];
    const D8: [Cell; 7] = [SEG_A, SEG_B, SEG_C, SEG_D, SEG_E, SEG_F, SEG_G];
    const D9: [Cell; 6] = [SEG_A, SEG_B, SEG_C, SEG_D, SEG_F, SEG_G];
    const LF: [Cell; 4] = [SEG_A, SEG_F, SEG_E, SEG_G];
    const COLON: [Cell; 2] = [(0, 2, 1, 1), (0, 6, 1, 1)];
    const DOT: [Cell; 1] = [(0, 8, 1, 1)];
    const MINUS: [Cell; 1] = [SEG_G];
    match ch {
        '0' => (&D0, 6),
        '1' => (&D1, 6),
        '2' => (&D2, 6),
        '3' => (&D3, 6),
        '4' => (&D4, 6),
        '5' => (&D5, 6),
        '6' => (&D6, 6),
        '7' => (&D7, 6),
        '8' => (&D8, 6),
        '9' => (&D9, 6),
        'F' => (&LF, 6),
        ':' => (&COLON, 2),
        '.' => (&DOT, 2),
        '-' => (&MINUS, 6),
        _ => (&[], 6),
    }
}
