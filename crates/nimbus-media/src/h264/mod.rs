//! A small, exact (lossless) H.264 Baseline encoder for synthetic pictures,
//! and the test pattern it is meant for ([`pattern`]).
//!
//! Written from ITU-T H.264 §7 (syntax), §8.3 (intra prediction) and §9.2
//! (CAVLC). The tools are deliberately few:
//!
//! * one slice per picture, CAVLC, `pic_order_cnt_type` 2, one reference
//!   frame, deblocking disabled, QP 16 (where a 4×4 DC coefficient `c` adds
//!   exactly `c` to every sample of its block);
//! * **IDR pictures** (I slices) every `idr_interval` frames and **P pictures**
//!   in between;
//! * per macroblock, the cheapest exact choice of:
//!   `P_Skip` (P pictures: the macroblock did not change; every motion vector
//!   is zero, so a skip is a copy), `Intra_16x16` with vertical / horizontal /
//!   DC prediction and no residual, `Intra_4x4` with vertical / horizontal / DC
//!   prediction per block and at most a DC coefficient per block (pictures made
//!   of flat 4×4 blocks), and `I_PCM` (raw samples) for anything else. Chroma
//!   is never given a residual: when no chroma prediction matches, the
//!   macroblock is `I_PCM`.
//!
//! Because every macroblock decodes to exactly the source samples, the
//! decoder's picture equals the encoder's input at every frame: there is no
//! drift and no reconstruction loop. Arbitrary pictures are valid input (they
//! become mostly `I_PCM`); pictures drawn on a 4-pixel grid with neutral or
//! macroblock-aligned colour, like [`pattern::TestPattern`], cost a few bits per
//! macroblock.

pub mod bits;
pub mod pattern;

use bytes::Bytes;
use flash_amf::flv::AvcDecoderConfigurationRecord;

use self::bits::{nal_unit, BitWriter};
use crate::MediaError;

/// Largest accepted width or height in pixels.
pub const MAX_DIMENSION: u32 = 4096;
/// Largest accepted picture size in macroblocks (Level 5.1 MaxFS).
pub const MAX_FRAME_MBS: u32 = 36_864;
/// Largest accepted frame rate.
pub const MAX_FPS: u32 = 120;

/// AVCProfileIndication: Baseline.
pub const PROFILE_BASELINE: u8 = 66;
/// profile_compatibility: constraint_set0_flag and constraint_set1_flag
/// (Constrained Baseline: decodable by Baseline and Main decoders).
pub const CONSTRAINT_FLAGS: u8 = 0xC0;

/// Luma QP of every macroblock (`pic_init_qp_minus26` = −10).
const QP: i32 = 16;
/// log2_max_frame_num_minus4.
const LOG2_MAX_FRAME_NUM_MINUS4: u32 = 4;
const MAX_FRAME_NUM: u32 = 1 << (LOG2_MAX_FRAME_NUM_MINUS4 + 4);

// NAL unit types.
const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

// Intra prediction modes (the same numbers for Intra_16x16 and Intra_4x4).
const PRED_V: u8 = 0;
const PRED_H: u8 = 1;
const PRED_DC: u8 = 2;
// intra_chroma_pred_mode.
const CHROMA_DC: u8 = 0;
const CHROMA_H: u8 = 1;
const CHROMA_V: u8 = 2;

/// codeNum of `coded_block_pattern` me(v) for Intra_4x4 macroblocks with no
/// chroma residual, indexed by CodedBlockPatternLuma (Table 9-4).
const INTRA_CBP_CODE: [u32; 16] = [3, 29, 30, 17, 31, 18, 37, 8, 32, 38, 19, 9, 20, 10, 11, 2];

/// A colour in BT.601 limited-range Y'CbCr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Yuv {
    /// Luma (16 = black, 235 = white).
    pub y: u8,
    /// Blue-difference chroma (128 = neutral).
    pub u: u8,
    /// Red-difference chroma (128 = neutral).
    pub v: u8,
}

impl Yuv {
    /// A colour from its three components.
    pub const fn new(y: u8, u: u8, v: u8) -> Self {
        Yuv { y, u, v }
    }

    /// A neutral grey of luma `y`.
    pub const fn grey(y: u8) -> Self {
        Yuv { y, u: 128, v: 128 }
    }

    /// Black (Y 16).
    pub const BLACK: Yuv = Yuv::grey(16);
    /// White (Y 235).
    pub const WHITE: Yuv = Yuv::grey(235);
}

/// A 4:2:0 8-bit picture. The planes are allocated to whole macroblocks
/// (the visible `width` × `height` is cropped in the SPS); samples outside the
/// visible area are filled by replicating the edges when the frame is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    width: u32,
    height: u32,
    mb_w: usize,
    mb_h: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

impl Frame {
    /// A black frame. Width and height must be even, from 2 to
    /// [`MAX_DIMENSION`], and at most [`MAX_FRAME_MBS`] macroblocks.
    pub fn new(width: u32, height: u32) -> Result<Self, MediaError> {
        check_dimensions(width, height)?;
        let mb_w = width.div_ceil(16) as usize;
        let mb_h = height.div_ceil(16) as usize;
        Ok(Frame {
            width,
            height,
            mb_w,
            mb_h,
            y: vec![16; mb_w * 16 * mb_h * 16],
            u: vec![128; mb_w * 8 * mb_h * 8],
            v: vec![128; mb_w * 8 * mb_h * 8],
        })
    }

    /// Visible width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Visible height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes per row of the luma plane (width rounded up to 16).
    pub fn luma_stride(&self) -> usize {
        self.mb_w * 16
    }

    /// Bytes per row of each chroma plane (luma stride / 2).
    pub fn chroma_stride(&self) -> usize {
        self.mb_w * 8
    }

    /// The luma plane (`luma_stride` × height rounded up to 16).
    pub fn luma(&self) -> &[u8] {
        &self.y
    }

    /// The luma plane, writable.
    pub fn luma_mut(&mut self) -> &mut [u8] {
        &mut self.y
    }

    /// The Cb plane.
    pub fn cb(&self) -> &[u8] {
        &self.u
    }

    /// The Cb plane, writable.
    pub fn cb_mut(&mut self) -> &mut [u8] {
        &mut self.u
    }

    /// The Cr plane.
    pub fn cr(&self) -> &[u8] {
        &self.v
    }

    /// The Cr plane, writable.
    pub fn cr_mut(&mut self) -> &mut [u8] {
        &mut self.v
    }

    /// Fills the whole frame with one colour.
    pub fn fill(&mut self, c: Yuv) {
        self.y.fill(c.y);
        self.u.fill(c.u);
        self.v.fill(c.v);
    }

    /// Fills a rectangle given in luma pixels, clipped to the frame. Chroma
    /// covers `x/2 .. (x+w)/2` (rounded outwards), so even coordinates and sizes
    /// give exact colour edges.
    pub fn fill_rect(&mut self, x: u32, y: u32, w: u32, h: u32, c: Yuv) {
        let (ls, cs) = (self.luma_stride(), self.chroma_stride());
        let x0 = (x as usize).min(self.width as usize);
        let y0 = (y as usize).min(self.height as usize);
        let x1 = (x as usize)
            .saturating_add(w as usize)
            .min(self.width as usize);
        let y1 = (y as usize)
            .saturating_add(h as usize)
            .min(self.height as usize);
        if x0 >= x1 || y0 >= y1 {
            return;
        }
        for row in y0..y1 {
            if let Some(s) = self.y.get_mut(row * ls + x0..row * ls + x1) {
                s.fill(c.y);
            }
        }
        let (cx0, cy0, cx1, cy1) = (x0 / 2, y0 / 2, x1.div_ceil(2), y1.div_ceil(2));
        for row in cy0..cy1 {
            let r = row * cs + cx0..row * cs + cx1;
            if let Some(s) = self.u.get_mut(r.clone()) {
                s.fill(c.u);
            }
            if let Some(s) = self.v.get_mut(r) {
                s.fill(c.v);
            }
        }
    }

    /// The visible picture as planar I420 (`width*height` luma bytes, then
    /// the two `width/2 * height/2` chroma planes): what a decoder outputs.
    pub fn to_i420(&self) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = Vec::with_capacity(w * h * 3 / 2);
        for row in 0..h {
            let s = row * self.luma_stride();
            out.extend_from_slice(self.y.get(s..s + w).unwrap_or(&[]));
        }
        for plane in [&self.u, &self.v] {
            for row in 0..h / 2 {
                let s = row * self.chroma_stride();
                out.extend_from_slice(plane.get(s..s + w / 2).unwrap_or(&[]));
            }
        }
        out
    }

    /// Replicates the right and bottom edges into the macroblock padding.
    fn pad(&mut self) {
        let (w, h) = (self.width as usize, self.height as usize);
        pad_plane(&mut self.y, self.mb_w * 16, self.mb_h * 16, w, h);
        let (cw, ch) = (self.mb_w * 8, self.mb_h * 8);
        pad_plane(&mut self.u, cw, ch, w / 2, h / 2);
        pad_plane(&mut self.v, cw, ch, w / 2, h / 2);
    }

    fn same_dimensions(&self, other: &Frame) -> bool {
        self.width == other.width && self.height == other.height
    }
}

fn pad_plane(p: &mut [u8], stride: usize, rows: usize, w: usize, h: usize) {
    if w == 0 || h == 0 || p.len() < stride * rows {
        return;
    }
    for row in 0..h {
        let last = p[row * stride + w - 1];
        p[row * stride + w..row * stride + stride].fill(last);
    }
    for row in h..rows {
        p.copy_within((h - 1) * stride..h * stride, row * stride);
    }
}

fn check_dimensions(width: u32, height: u32) -> Result<(), MediaError> {
    if !(2..=MAX_DIMENSION).contains(&width) || !(2..=MAX_DIMENSION).contains(&height) {
        return Err(MediaError::Config(format!(
            "picture size {width}x{height} outside 2..={MAX_DIMENSION}"
        )));
    }
    if width % 2 != 0 || height % 2 != 0 {
        return Err(MediaError::Config(format!(
            "picture size {width}x{height} must be even (4:2:0)"
        )));
    }
    if width.div_ceil(16) * height.div_ceil(16) > MAX_FRAME_MBS {
        return Err(MediaError::Config(format!(
            "picture size {width}x{height} exceeds {MAX_FRAME_MBS} macroblocks"
        )));
    }
    Ok(())
}

/// Encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Visible width in pixels (even). Default 320.
    pub width: u32,
    /// Visible height in pixels (even). Default 240.
    pub height: u32,
    /// Frames per second, written to the SPS timing information. Default 15.
    pub fps: u32,
    /// An IDR picture every this many frames (1 = all IDR). Default 30 (2 s).
    pub idr_interval: u32,
    /// Also put SPS and PPS in front of every IDR picture (for receivers that
    /// join without the sequence header). Default false.
    pub inband_parameter_sets: bool,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            width: 320,
            height: 240,
            fps: 15,
            idr_interval: 30,
            inband_parameter_sets: false,
        }
    }
}

impl EncoderConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), MediaError> {
        check_dimensions(self.width, self.height)?;
        if !(1..=MAX_FPS).contains(&self.fps) {
            return Err(MediaError::Config(format!(
                "frame rate {} outside 1..={MAX_FPS}",
                self.fps
            )));
        }
        if self.idr_interval == 0 {
            return Err(MediaError::Config("idr_interval must be at least 1".into()));
        }
        Ok(())
    }

    /// The smallest level (×10, e.g. 30 for 3.0) at or above 3.0 whose frame
    /// size and macroblock rate limits (Table A-1) fit this configuration.
    pub fn level_idc(&self) -> u8 {
        let fs = u64::from(self.width.div_ceil(16)) * u64::from(self.height.div_ceil(16));
        let mbps = fs * u64::from(self.fps);
        let max_side = u64::from(self.width.div_ceil(16).max(self.height.div_ceil(16)));
        // (level_idc, MaxMBPS, MaxFS)
        const LEVELS: [(u8, u64, u64); 9] = [
            (30, 40_500, 1_620),
            (31, 108_000, 3_600),
            (32, 216_000, 5_120),
            (40, 245_760, 8_192),
            (42, 522_240, 8_704),
            (50, 589_824, 22_080),
            (51, 983_040, 36_864),
            (52, 2_073_600, 36_864),
            (52, u64::MAX, u64::MAX),
        ];
        LEVELS
            .iter()
            .find(|(_, max_mbps, max_fs)| {
                fs <= *max_fs
                    && mbps <= *max_mbps
                    && max_side * max_side <= max_fs.saturating_mul(8)
            })
            .map_or(52, |l| l.0)
    }
}

/// Sizes of one encoded frame, by macroblock kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// Bytes of all NAL units of the frame (without length prefixes).
    pub bytes: usize,
    /// P_Skip macroblocks.
    pub skip: u32,
    /// Intra_16x16 macroblocks.
    pub intra16: u32,
    /// Intra_4x4 macroblocks.
    pub intra4: u32,
    /// I_PCM macroblocks.
    pub pcm: u32,
}

/// One encoded picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// True for an IDR picture (FLV key frame).
    pub keyframe: bool,
    /// The NAL units, without start codes or length prefixes.
    pub nalus: Vec<Bytes>,
    /// Sizes.
    pub stats: FrameStats,
}

impl EncodedFrame {
    /// The NAL units in AVCC form: each prefixed by its length as a 4-byte
    /// big-endian integer (lengthSizeMinusOne = 3).
    pub fn to_avcc(&self) -> Vec<u8> {
        let len = self.nalus.iter().map(|n| n.len() + 4).sum();
        let mut out = Vec::with_capacity(len);
        for n in &self.nalus {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    /// The NAL units in Annex B form (4-byte start codes), e.g. for `.h264` files.
    pub fn to_annex_b(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for n in &self.nalus {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MbKind {
    Skip,
    I16,
    I4,
    Pcm,
}

/// What later macroblocks need to know about a coded one.
#[derive(Debug, Clone, Copy)]
struct MbInfo {
    kind: MbKind,
    /// TotalCoeff of each 4×4 luma block, by luma4x4BlkIdx.
    total_coeff: [u8; 16],
    /// Intra4x4PredMode by luma4x4BlkIdx (Intra_4x4 macroblocks only).
    modes: [u8; 16],
}

impl MbInfo {
    const SKIP: MbInfo = MbInfo {
        kind: MbKind::Skip,
        total_coeff: [0; 16],
        modes: [PRED_DC; 16],
    };
}

/// The coding decision for one macroblock.
#[derive(Debug, Clone, Copy)]
enum MbCoding {
    Skip,
    I16 {
        mode: u8,
        chroma: u8,
    },
    I4 {
        modes: [u8; 16],
        dc: [i16; 16],
        chroma: u8,
    },
    Pcm,
}

/// luma4x4BlkIdx → (x, y) of the block in 4-sample units (§6.4.3).
const BLK_XY: [(usize, usize); 16] = [
    (0, 0),
    (1, 0),
    (0, 1),
    (1, 1),
    (2, 0),
    (3, 0),
    (2, 1),
    (3, 1),
    (0, 2),
    (1, 2),
    (0, 3),
    (1, 3),
    (2, 2),
    (3, 2),
    (2, 3),
    (3, 3),
];

/// (x, y) in 4-sample units → luma4x4BlkIdx.
fn blk_idx(bx: usize, by: usize) -> usize {
    (by / 2) * 8 + (bx / 2) * 4 + (by % 2) * 2 + (bx % 2)
}

/// The H.264 encoder. Feed it [`Frame`]s of the configured size in display
/// order; each call returns one access unit.
#[derive(Debug)]
pub struct H264Encoder {
    cfg: EncoderConfig,
    mb_w: usize,
    mb_h: usize,
    sps: Bytes,
    pps: Bytes,
    frame_count: u64,
    frame_num: u32,
    idr_pic_id: u32,
    cur: Frame,
    prev: Frame,
    have_prev: bool,
    info: Vec<MbInfo>,
}

impl H264Encoder {
    /// An encoder for `cfg` (validated).
    pub fn new(cfg: EncoderConfig) -> Result<Self, MediaError> {
        cfg.validate()?;
        let cur = Frame::new(cfg.width, cfg.height)?;
        let (mb_w, mb_h) = (cur.mb_w, cur.mb_h);
        let mut enc = H264Encoder {
            cfg,
            mb_w,
            mb_h,
            sps: Bytes::new(),
            pps: Bytes::new(),
            frame_count: 0,
            frame_num: 0,
            idr_pic_id: 0,
            prev: cur.clone(),
            cur,
            have_prev: false,
            info: vec![MbInfo::SKIP; mb_w * mb_h],
        };
        enc.sps = Bytes::from(enc.build_sps());
        enc.pps = Bytes::from(build_pps());
        Ok(enc)
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// The sequence parameter set NAL unit.
    pub fn sps(&self) -> &Bytes {
        &self.sps
    }

    /// The picture parameter set NAL unit.
    pub fn pps(&self) -> &Bytes {
        &self.pps
    }

    /// The AVCDecoderConfigurationRecord (the FLV/RTMP AVC sequence header body
    /// after the 5-byte video tag header).
    pub fn decoder_configuration(&self) -> AvcDecoderConfigurationRecord {
        AvcDecoderConfigurationRecord {
            configuration_version: 1,
            profile_indication: PROFILE_BASELINE,
            profile_compatibility: CONSTRAINT_FLAGS,
            level_indication: self.cfg.level_idc(),
            length_size_minus_one: 3,
            sps: vec![self.sps.clone()],
            pps: vec![self.pps.clone()],
            trailing: Bytes::new(),
        }
    }

    /// [`decoder_configuration`](Self::decoder_configuration) as bytes.
    pub fn decoder_configuration_bytes(&self) -> Vec<u8> {
        let r = self.decoder_configuration();
        // One SPS and one PPS, each far below 64 KiB: serialisation cannot fail.
        r.to_bytes().unwrap_or_default()
    }

    /// Number of frames encoded so far.
    pub fn frame_count(&self) -> u64 {
        self.frame_count
    }

    /// Makes the next frame an IDR picture.
    pub fn force_keyframe(&mut self) {
        self.have_prev = false;
    }

    /// Encodes one frame. Fails only if the frame has another size than the
    /// configuration.
    pub fn encode(&mut self, frame: &Frame) -> Result<EncodedFrame, MediaError> {
        if !frame.same_dimensions(&self.cur) {
            return Err(MediaError::Config(format!(
                "frame is {}x{}, encoder is {}x{}",
                frame.width, frame.height, self.cfg.width, self.cfg.height
            )));
        }
        self.cur.clone_from(frame);
        self.cur.pad();
        let idr = !self.have_prev || self.frame_count % u64::from(self.cfg.idr_interval) == 0;
        if idr {
            self.frame_num = 0;
        }
        let mut stats = FrameStats::default();
        let slice = self.encode_slice(idr, &mut stats);
        let mut nalus = Vec::with_capacity(3);
        if idr && self.cfg.inband_parameter_sets {
            nalus.push(self.sps.clone());
            nalus.push(self.pps.clone());
        }
        let nal = if idr {
            nal_unit(3, NAL_IDR, &slice)
        } else {
            nal_unit(2, NAL_SLICE, &slice)
        };
        nalus.push(Bytes::from(nal));
        stats.bytes = nalus.iter().map(Bytes::len).sum();
        if idr {
            self.idr_pic_id = (self.idr_pic_id + 1) % 65_536;
        }
        self.frame_num = (self.frame_num + 1) % MAX_FRAME_NUM;
        self.frame_count += 1;
        std::mem::swap(&mut self.cur, &mut self.prev);
        self.have_prev = true;
        Ok(EncodedFrame {
            keyframe: idr,
            nalus,
            stats,
        })
    }

    fn build_sps(&self) -> Vec<u8> {
        let cfg = &self.cfg;
        let mut w = BitWriter::with_capacity(32);
        w.put_bits(8, u32::from(PROFILE_BASELINE));
        w.put_bits(8, u32::from(CONSTRAINT_FLAGS)); // constraint_set0..5, reserved_zero_2bits
        w.put_bits(8, u32::from(cfg.level_idc()));
        w.put_ue(0); // seq_parameter_set_id
        w.put_ue(LOG2_MAX_FRAME_NUM_MINUS4);
        w.put_ue(2); // pic_order_cnt_type: output order = decoding order
        w.put_ue(1); // max_num_ref_frames
        w.put_bit(false); // gaps_in_frame_num_value_allowed_flag
        w.put_ue(self.mb_w as u32 - 1); // pic_width_in_mbs_minus1
        w.put_ue(self.mb_h as u32 - 1); // pic_height_in_map_units_minus1
        w.put_bit(true); // frame_mbs_only_flag
        w.put_bit(true); // direct_8x8_inference_flag
        let crop_right = (self.mb_w as u32 * 16 - cfg.width) / 2;
        let crop_bottom = (self.mb_h as u32 * 16 - cfg.height) / 2;
        let crop = crop_right > 0 || crop_bottom > 0;
        w.put_bit(crop); // frame_cropping_flag
        if crop {
            w.put_ue(0);
            w.put_ue(crop_right);
            w.put_ue(0);
            w.put_ue(crop_bottom);
        }
        w.put_bit(true); // vui_parameters_present_flag
        w.put_bit(false); // aspect_ratio_info_present_flag
        w.put_bit(false); // overscan_info_present_flag
        w.put_bit(false); // video_signal_type_present_flag
        w.put_bit(false); // chroma_loc_info_present_flag
        w.put_bit(true); // timing_info_present_flag
        w.put_bits(32, 1); // num_units_in_tick
        w.put_bits(32, cfg.fps * 2); // time_scale: two ticks per frame
        w.put_bit(false); // fixed_frame_rate_flag (a live source may drop frames)
        w.put_bit(false); // nal_hrd_parameters_present_flag
        w.put_bit(false); // vcl_hrd_parameters_present_flag
        w.put_bit(false); // pic_struct_present_flag
        w.put_bit(true); // bitstream_restriction_flag
        w.put_bit(true); // motion_vectors_over_pic_boundaries_flag
        w.put_ue(0); // max_bytes_per_pic_denom
        w.put_ue(0); // max_bits_per_mb_denom
        w.put_ue(15); // log2_max_mv_length_horizontal
        w.put_ue(15); // log2_max_mv_length_vertical
        w.put_ue(0); // max_num_reorder_frames: no reordering, no output delay
        w.put_ue(1); // max_dec_frame_buffering
        w.put_trailing_bits();
        nal_unit(3, NAL_SPS, &w.into_bytes())
    }

    fn encode_slice(&mut self, idr: bool, stats: &mut FrameStats) -> Vec<u8> {
        let mbs = self.mb_w * self.mb_h;
        let mut w = BitWriter::with_capacity(mbs * 8 + 64);
        // slice_header() (§7.3.3)
        w.put_ue(0); // first_mb_in_slice
        w.put_ue(if idr { 7 } else { 5 }); // slice_type: I / P, all slices alike
        w.put_ue(0); // pic_parameter_set_id
        w.put_bits(LOG2_MAX_FRAME_NUM_MINUS4 + 4, self.frame_num);
        if idr {
            w.put_ue(self.idr_pic_id);
        }
        if !idr {
            w.put_bit(false); // num_ref_idx_active_override_flag
            w.put_bit(false); // ref_pic_list_modification_flag_l0
        }
        // dec_ref_pic_marking()
        if idr {
            w.put_bit(false); // no_output_of_prior_pics_flag
            w.put_bit(false); // long_term_reference_flag
        } else {
            w.put_bit(false); // adaptive_ref_pic_marking_mode_flag: sliding window
        }
        w.put_se(0); // slice_qp_delta
        w.put_ue(1); // disable_deblocking_filter_idc: off
                     // slice_data() (§7.3.4)
        let mb_type_offset = if idr { 0 } else { 5 };
        let mut skip_run = 0u32;
        for my in 0..self.mb_h {
            for mx in 0..self.mb_w {
                let coding = self.choose(mx, my, !idr);
                if let MbCoding::Skip = coding {
                    skip_run += 1;
                    stats.skip += 1;
                    self.info[my * self.mb_w + mx] = MbInfo::SKIP;
                    continue;
                }
                if !idr {
                    w.put_ue(skip_run);
                    skip_run = 0;
                }
                let info = self.write_mb(&mut w, mx, my, coding, mb_type_offset);
                match info.kind {
                    MbKind::I16 => stats.intra16 += 1,
                    MbKind::I4 => stats.intra4 += 1,
                    MbKind::Pcm => stats.pcm += 1,
                    MbKind::Skip => stats.skip += 1,
                }
                self.info[my * self.mb_w + mx] = info;
            }
        }
        if skip_run > 0 {
            w.put_ue(skip_run);
        }
        w.put_trailing_bits();
        w.into_bytes()
    }

    // ---------------------------------------------------------------------
    // Mode decision

    fn choose(&self, mx: usize, my: usize, inter: bool) -> MbCoding {
        if inter && self.mb_unchanged(mx, my) {
            return MbCoding::Skip;
        }
        let Some(chroma) = self.chroma_mode(mx, my) else {
            return MbCoding::Pcm;
        };
        let (left, top) = (mx > 0, my > 0);
        for mode in [PRED_V, PRED_H, PRED_DC] {
            if (mode == PRED_V && !top) || (mode == PRED_H && !left) {
                continue;
            }
            if self.luma16_matches(mx, my, mode) {
                return MbCoding::I16 { mode, chroma };
            }
        }
        match self.intra4(mx, my) {
            Some((modes, dc)) => MbCoding::I4 { modes, dc, chroma },
            None => MbCoding::Pcm,
        }
    }

    fn mb_unchanged(&self, mx: usize, my: usize) -> bool {
        if !self.have_prev {
            return false;
        }
        let ls = self.cur.luma_stride();
        let cs = self.cur.chroma_stride();
        let luma = (0..16).all(|r| {
            let s = (my * 16 + r) * ls + mx * 16;
            self.cur.y.get(s..s + 16) == self.prev.y.get(s..s + 16)
        });
        luma && (0..8).all(|r| {
            let s = (my * 8 + r) * cs + mx * 8;
            self.cur.u.get(s..s + 8) == self.prev.u.get(s..s + 8)
                && self.cur.v.get(s..s + 8) == self.prev.v.get(s..s + 8)
        })
    }

    /// Sample of the current picture, 0 outside the planes (never read for
    /// unavailable neighbours).
    fn luma_at(&self, x: usize, y: usize) -> u8 {
        self.cur
            .y
            .get(y * self.cur.luma_stride() + x)
            .copied()
            .unwrap_or(0)
    }

    fn luma16_matches(&self, mx: usize, my: usize, mode: u8) -> bool {
        let (x0, y0) = (mx * 16, my * 16);
        let dc = if mode == PRED_DC {
            let st = (my > 0).then(|| {
                (0..16)
                    .map(|i| u32::from(self.luma_at(x0 + i, y0 - 1)))
                    .sum::<u32>()
            });
            let sl = (mx > 0).then(|| {
                (0..16)
                    .map(|i| u32::from(self.luma_at(x0 - 1, y0 + i)))
                    .sum::<u32>()
            });
            match (st, sl) {
                (Some(t), Some(l)) => (t + l + 16) >> 5,
                (None, Some(l)) => (l + 8) >> 4,
                (Some(t), None) => (t + 8) >> 4,
                (None, None) => 128,
            }
        } else {
            0
        };
        (0..16).all(|yy| {
            (0..16).all(|xx| {
                let pred = match mode {
                    PRED_V => self.luma_at(x0 + xx, y0 - 1),
                    PRED_H => self.luma_at(x0 - 1, y0 + yy),
                    _ => dc as u8,
                };
                self.luma_at(x0 + xx, y0 + yy) == pred
            })
        })
    }

    /// The first chroma prediction mode reproducing both chroma blocks exactly.
    fn chroma_mode(&self, mx: usize, my: usize) -> Option<u8> {
        let (left, top) = (mx > 0, my > 0);
        [CHROMA_DC, CHROMA_H, CHROMA_V].into_iter().find(|&mode| {
            if (mode == CHROMA_H && !left) || (mode == CHROMA_V && !top) {
                return false;
            }
            [&self.cur.u, &self.cur.v]
                .into_iter()
                .all(|p| chroma_matches(p, self.cur.chroma_stride(), mx, my, mode))
        })
    }

    /// Intra_4x4 with V/H/DC prediction and DC-only residuals: per block the
    /// mode and DC level, or `None` when a block is not flat after prediction.
    fn intra4(&self, mx: usize, my: usize) -> Option<([u8; 16], [i16; 16])> {
        let mut modes = [PRED_DC; 16];
        let mut dc = [0i16; 16];
        for (blk, &(bx, by)) in BLK_XY.iter().enumerate() {
            let predicted = self.predicted_i4_mode(mx, my, bx, by, &modes);
            let x0 = mx * 16 + bx * 4;
            let y0 = my * 16 + by * 4;
            let has_top = y0 > 0;
            let has_left = x0 > 0;
            let mut best: Option<(u32, u8, i16)> = None;
            for mode in [PRED_V, PRED_H, PRED_DC] {
                if (mode == PRED_V && !has_top) || (mode == PRED_H && !has_left) {
                    continue;
                }
                let Some(r) = self.i4_residual(x0, y0, mode, has_top, has_left) else {
                    continue;
                };
                let cost = if mode == predicted { 1 } else { 4 } + dc_level_cost(r);
                if best.is_none_or(|(c, _, _)| cost < c) {
                    best = Some((cost, mode, r));
                }
            }
            let (_, mode, r) = best?;
            modes[blk] = mode;
            dc[blk] = r;
        }
        Some((modes, dc))
    }

    /// The constant difference between the 4×4 block at (x0, y0) and its
    /// prediction, or `None` when it is not constant.
    fn i4_residual(&self, x0: usize, y0: usize, mode: u8, top: bool, left: bool) -> Option<i16> {
        let dc = if mode == PRED_DC {
            let st = top.then(|| {
                (0..4)
                    .map(|i| u32::from(self.luma_at(x0 + i, y0 - 1)))
                    .sum::<u32>()
            });
            let sl = left.then(|| {
                (0..4)
                    .map(|i| u32::from(self.luma_at(x0 - 1, y0 + i)))
                    .sum::<u32>()
            });
            match (st, sl) {
                (Some(t), Some(l)) => (t + l + 4) >> 3,
                (None, Some(l)) => (l + 2) >> 2,
                (Some(t), None) => (t + 2) >> 2,
                (None, None) => 128,
            }
        } else {
            0
        };
        let mut diff: Option<i16> = None;
        for yy in 0..4 {
            for xx in 0..4 {
                let pred = match mode {
                    PRED_V => self.luma_at(x0 + xx, y0 - 1),
                    PRED_H => self.luma_at(x0 - 1, y0 + yy),
                    _ => dc as u8,
                };
                let d = i16::from(self.luma_at(x0 + xx, y0 + yy)) - i16::from(pred);
                match diff {
                    None => diff = Some(d),
                    Some(e) if e != d => return None,
                    Some(_) => {}
                }
            }
        }
        diff
    }

    /// predIntra4x4PredMode (§8.3.1.1) for the block at (bx, by) of macroblock
    /// (mx, my), given the modes chosen so far in this macroblock.
    fn predicted_i4_mode(&self, mx: usize, my: usize, bx: usize, by: usize, cur: &[u8; 16]) -> u8 {
        let mode_of = |info: &MbInfo, blk: usize| -> u8 {
            if info.kind == MbKind::I4 {
                info.modes[blk]
            } else {
                PRED_DC
            }
        };
        let a = if bx > 0 {
            Some(cur[blk_idx(bx - 1, by)])
        } else if mx > 0 {
            Some(mode_of(&self.info[my * self.mb_w + mx - 1], blk_idx(3, by)))
        } else {
            None
        };
        let b = if by > 0 {
            Some(cur[blk_idx(bx, by - 1)])
        } else if my > 0 {
            Some(mode_of(
                &self.info[(my - 1) * self.mb_w + mx],
                blk_idx(bx, 3),
            ))
        } else {
            None
        };
        match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            _ => PRED_DC,
        }
    }

    /// nC for the coeff_token of luma block (bx, by) of macroblock (mx, my)
    /// (§9.2.1), given the TotalCoeff values of this macroblock so far.
    fn luma_nc(&self, mx: usize, my: usize, bx: usize, by: usize, cur: &[u8; 16]) -> u32 {
        let n_of = |info: &MbInfo, blk: usize| -> u32 {
            match info.kind {
                MbKind::Skip | MbKind::I16 => 0,
                MbKind::Pcm => 16,
                MbKind::I4 => u32::from(info.total_coeff[blk]),
            }
        };
        let a = if bx > 0 {
            Some(u32::from(cur[blk_idx(bx - 1, by)]))
        } else if mx > 0 {
            Some(n_of(&self.info[my * self.mb_w + mx - 1], blk_idx(3, by)))
        } else {
            None
        };
        let b = if by > 0 {
            Some(u32::from(cur[blk_idx(bx, by - 1)]))
        } else if my > 0 {
            Some(n_of(&self.info[(my - 1) * self.mb_w + mx], blk_idx(bx, 3)))
        } else {
            None
        };
        match (a, b) {
            (Some(a), Some(b)) => (a + b + 1) >> 1,
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => 0,
        }
    }

    // ---------------------------------------------------------------------
    // Macroblock layer (§7.3.5)

    fn write_mb(
        &self,
        w: &mut BitWriter,
        mx: usize,
        my: usize,
        coding: MbCoding,
        offset: u32,
    ) -> MbInfo {
        match coding {
            MbCoding::Skip => MbInfo::SKIP,
            MbCoding::I16 { mode, chroma } => {
                // I_16x16_<mode>_0_0: mb_type 1 + mode.
                w.put_ue(offset + 1 + u32::from(mode));
                w.put_ue(u32::from(chroma)); // intra_chroma_pred_mode
                w.put_se(0); // mb_qp_delta
                             // Intra16x16DCLevel: no coefficients. nC as for block 0.
                let nc = self.luma_nc(mx, my, 0, 0, &[0; 16]);
                write_coeff_token(w, nc, 0, 0);
                MbInfo {
                    kind: MbKind::I16,
                    total_coeff: [0; 16],
                    modes: [PRED_DC; 16],
                }
            }
            MbCoding::I4 { modes, dc, chroma } => {
                w.put_ue(offset); // I_NxN
                for (blk, &(bx, by)) in BLK_XY.iter().enumerate() {
                    let predicted = self.predicted_i4_mode(mx, my, bx, by, &modes);
                    let mode = modes[blk];
                    if mode == predicted {
                        w.put_bit(true); // prev_intra4x4_pred_mode_flag
                    } else {
                        w.put_bit(false);
                        let rem = if mode < predicted { mode } else { mode - 1 };
                        w.put_bits(3, u32::from(rem)); // rem_intra4x4_pred_mode
                    }
                }
                w.put_ue(u32::from(chroma));
                let mut cbp = 0usize;
                for (blk, &d) in dc.iter().enumerate() {
                    if d != 0 {
                        cbp |= 1 << (blk / 4);
                    }
                }
                w.put_ue(INTRA_CBP_CODE[cbp]);
                let mut total = [0u8; 16];
                if cbp != 0 {
                    w.put_se(0); // mb_qp_delta
                    for blk in 0..16 {
                        if cbp & (1 << (blk / 4)) == 0 {
                            continue;
                        }
                        let (bx, by) = BLK_XY[blk];
                        let nc = self.luma_nc(mx, my, bx, by, &total);
                        total[blk] = write_dc_block(w, nc, dc[blk]);
                    }
                }
                MbInfo {
                    kind: MbKind::I4,
                    total_coeff: total,
                    modes,
                }
            }
            MbCoding::Pcm => {
                w.put_ue(offset + 25); // I_PCM
                w.align_zero(); // pcm_alignment_zero_bit
                let mut raw = [0u8; 384];
                let ls = self.cur.luma_stride();
                let cs = self.cur.chroma_stride();
                for r in 0..16 {
                    let s = (my * 16 + r) * ls + mx * 16;
                    if let Some(src) = self.cur.y.get(s..s + 16) {
                        raw[r * 16..r * 16 + 16].copy_from_slice(src);
                    }
                }
                for (p, plane) in [&self.cur.u, &self.cur.v].into_iter().enumerate() {
                    for r in 0..8 {
                        let s = (my * 8 + r) * cs + mx * 8;
                        if let Some(src) = plane.get(s..s + 8) {
                            let o = 256 + p * 64 + r * 8;
                            raw[o..o + 8].copy_from_slice(src);
                        }
                    }
                }
                w.put_bytes(&raw);
                MbInfo {
                    kind: MbKind::Pcm,
                    total_coeff: [16; 16],
                    modes: [PRED_DC; 16],
                }
            }
        }
    }
}

/// Whether the 8×8 chroma block of macroblock (mx, my) in `p` equals its
/// prediction with `mode` (§8.3.4).
fn chroma_matches(p: &[u8], stride: usize, mx: usize, my: usize, mode: u8) -> bool {
    let (x0, y0) = (mx * 8, my * 8);
    let at = |x: usize, y: usize| p.get(y * stride + x).copied().unwrap_or(0);
    let top = my > 0;
    let left = mx > 0;
    for (xo, yo) in [(0usize, 0usize), (4, 0), (0, 4), (4, 4)] {
        let dc = if mode == CHROMA_DC {
            let st = top.then(|| {
                (0..4)
                    .map(|i| u32::from(at(x0 + xo + i, y0 - 1)))
                    .sum::<u32>()
            });
            let sl = left.then(|| {
                (0..4)
                    .map(|i| u32::from(at(x0 - 1, y0 + yo + i)))
                    .sum::<u32>()
            });
            let v = if (xo == 0 && yo == 0) || (xo > 0 && yo > 0) {
                match (st, sl) {
                    (Some(t), Some(l)) => (t + l + 4) >> 3,
                    (None, Some(l)) => (l + 2) >> 2,
                    (Some(t), None) => (t + 2) >> 2,
                    (None, None) => 128,
                }
            } else if xo > 0 {
                match (st, sl) {
                    (Some(t), _) => (t + 2) >> 2,
                    (None, Some(l)) => (l + 2) >> 2,
                    (None, None) => 128,
                }
            } else {
                match (sl, st) {
                    (Some(l), _) => (l + 2) >> 2,
                    (None, Some(t)) => (t + 2) >> 2,
                    (None, None) => 128,
                }
            };
            v as u8
        } else {
            0
        };
        for yy in yo..yo + 4 {
            for xx in xo..xo + 4 {
                let pred = match mode {
                    CHROMA_H => at(x0 - 1, y0 + yy),
                    CHROMA_V => at(x0 + xx, y0 - 1),
                    _ => dc,
                };
                if at(x0 + xx, y0 + yy) != pred {
                    return false;
                }
            }
        }
    }
    true
}

fn build_pps() -> Vec<u8> {
    let mut w = BitWriter::with_capacity(8);
    w.put_ue(0); // pic_parameter_set_id
    w.put_ue(0); // seq_parameter_set_id
    w.put_bit(false); // entropy_coding_mode_flag: CAVLC
    w.put_bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.put_ue(0); // num_slice_groups_minus1
    w.put_ue(0); // num_ref_idx_l0_default_active_minus1
    w.put_ue(0); // num_ref_idx_l1_default_active_minus1
    w.put_bit(false); // weighted_pred_flag
    w.put_bits(2, 0); // weighted_bipred_idc
    w.put_se(QP - 26); // pic_init_qp_minus26
    w.put_se(0); // pic_init_qs_minus26
    w.put_se(0); // chroma_qp_index_offset
    w.put_bit(true); // deblocking_filter_control_present_flag
    w.put_bit(false); // constrained_intra_pred_flag
    w.put_bit(false); // redundant_pic_cnt_present_flag
    w.put_trailing_bits();
    nal_unit(3, NAL_PPS, &w.into_bytes())
}

/// coeff_token (Table 9-5) for TotalCoeff ≤ 1, as (length, code).
fn coeff_token(nc: u32, trailing_ones: u32, total: u32) -> (u32, u32) {
    match (nc, trailing_ones, total) {
        (0..=1, _, 0) => (1, 0b1),
        (0..=1, 0, _) => (6, 0b000101),
        (0..=1, _, _) => (2, 0b01),
        (2..=3, _, 0) => (2, 0b11),
        (2..=3, 0, _) => (6, 0b001011),
        (2..=3, _, _) => (2, 0b10),
        (4..=7, _, 0) => (4, 0b1111),
        (4..=7, 0, _) => (6, 0b001111),
        (4..=7, _, _) => (4, 0b1110),
        (_, _, 0) => (6, 0b000011),
        (_, t, _) => (6, t), // 6-bit FLC: (TotalCoeff − 1) << 2 | TrailingOnes
    }
}

fn write_coeff_token(w: &mut BitWriter, nc: u32, trailing_ones: u32, total: u32) {
    let (len, code) = coeff_token(nc, trailing_ones, total);
    w.put_bits(len, code);
}

/// Writes residual_block_cavlc() for a 4×4 luma block whose only non-zero
/// coefficient is the DC `level`; returns its TotalCoeff.
fn write_dc_block(w: &mut BitWriter, nc: u32, level: i16) -> u8 {
    if level == 0 {
        write_coeff_token(w, nc, 0, 0);
        return 0;
    }
    if level.abs() == 1 {
        write_coeff_token(w, nc, 1, 1);
        w.put_bit(level < 0); // trailing_ones_sign_flag
    } else {
        write_coeff_token(w, nc, 0, 1);
        write_level(w, level);
    }
    w.put_bits(1, 1); // total_zeros = 0 (TotalCoeff 1, Table 9-7)
    1
}

/// The first level of a block with TrailingOnes 0 and TotalCoeff ≤ 10:
/// suffixLength 0, and the decoder adds 2 to levelCode (§9.2.2.1).
fn write_level(w: &mut BitWriter, level: i16) {
    let l = i32::from(level);
    let level_code = if l > 0 { 2 * l - 2 } else { -2 * l - 1 } - 2;
    let level_code = level_code.max(0) as u32;
    if level_code < 14 {
        w.put_bits(level_code + 1, 1); // level_prefix zeros, then 1
    } else if level_code < 30 {
        w.put_bits(15, 1); // level_prefix 14
        w.put_bits(4, level_code - 14);
    } else {
        w.put_bits(16, 1); // level_prefix 15
        w.put_bits(12, (level_code - 30).min(4095));
    }
}

fn dc_level_cost(level: i16) -> u32 {
    let l = u32::from(level.unsigned_abs());
    match l {
        0 => 1,
        1 => 4,
        _ => {
            let code = 2 * l - 4;
            6 + 1
                + if code < 14 {
                    code + 1
                } else if code < 30 {
                    19
                } else {
                    28
                }
        }
    }
}

#[cfg(test)]
mod tests;
