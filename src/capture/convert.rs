//! Camera buffers to frames: MJPEG (with the Huffman tables that webcams
//! leave out restored), YUYV and GREY.

use std::path::Path;

use crate::frame::{Frame, FrameError, PixelFormat};

/// The JPEG standard's Huffman tables (ITU T.81 Annex K.3) as one DHT
/// segment. MJPEG cameras omit DHT and expect decoders to use these.
fn standard_dht() -> Vec<u8> {
    const DC_LUMA_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
    const DC_CHROMA_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
    const AC_LUMA_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
    const AC_CHROMA_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
    const AC_LUMA_VALS: [u8; 162] = [
        0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32,
        0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16,
        0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
        0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
        0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
        0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8,
        0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
        0xf9, 0xfa,
    ];
    const AC_CHROMA_VALS: [u8; 162] = [
        0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22, 0x32, 0x81,
        0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34,
        0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44,
        0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
        0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92,
        0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4,
        0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6,
        0xd7, 0xd8, 0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
        0xf9, 0xfa,
    ];
    let dc_vals: Vec<u8> = (0..12).collect();
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMA_BITS, &dc_vals),
        (0x10, &AC_LUMA_BITS, &AC_LUMA_VALS),
        (0x01, &DC_CHROMA_BITS, &dc_vals),
        (0x11, &AC_CHROMA_BITS, &AC_CHROMA_VALS),
    ];
    let mut body = Vec::new();
    for (class_id, bits, vals) in tables {
        body.push(class_id);
        body.extend_from_slice(bits);
        body.extend_from_slice(vals);
    }
    let mut seg = vec![0xff, 0xc4];
    seg.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&body);
    seg
}

/// Whether a JPEG stream defines Huffman tables before its first scan.
fn has_dht(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xff {
        let marker = jpeg[i + 1];
        if marker == 0xc4 {
            return true;
        }
        if marker == 0xda {
            return false;
        }
        let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
        i += 2 + len;
    }
    false
}

/// An MJPEG camera buffer with the standard tables inserted when missing.
pub fn complete_mjpeg(jpeg: &[u8]) -> Vec<u8> {
    if jpeg.len() < 4 || jpeg[0..2] != [0xff, 0xd8] || has_dht(jpeg) {
        return jpeg.to_vec();
    }
    let mut out = Vec::with_capacity(jpeg.len() + 432);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&standard_dht());
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Decodes one MJPEG buffer into an RGB8 (or GREY8) frame.
pub fn mjpeg_frame(buf: &[u8], seq: u64, source: &str) -> Result<Frame, FrameError> {
    let mut f = Frame::from_encoded(&complete_mjpeg(buf), Path::new(source), seq)?;
    f.captured_at = std::time::SystemTime::now();
    Ok(f)
}

/// A YUYV (4:2:2) buffer as a frame; the engine converts to RGB when it preprocesses.
pub fn yuyv_frame(buf: &[u8], width: u32, height: u32, seq: u64, source: &str) -> Result<Frame, FrameError> {
    let need = width as usize * height as usize * 2;
    Frame::new(width, height, PixelFormat::Yuyv, buf.get(..need).unwrap_or(buf).to_vec(), seq, source.into())
}

/// A GREY (8-bit luma) buffer as a frame.
pub fn grey_frame(buf: &[u8], width: u32, height: u32, seq: u64, source: &str) -> Result<Frame, FrameError> {
    let need = width as usize * height as usize;
    Frame::new(width, height, PixelFormat::Grey8, buf.get(..need).unwrap_or(buf).to_vec(), seq, source.into())
}

/// RGB8 to YUYV (BT.601 limited range), for synthetic cameras and tests.
pub fn rgb_to_yuyv(rgb: &[u8], width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() / 3 * 2);
    for row in rgb.chunks_exact(width * 3) {
        for pair in row.chunks_exact(6) {
            let yuv = |p: &[u8]| {
                let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
                (
                    16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
                    128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
                    128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
                )
            };
            let (y0, u0, v0) = yuv(&pair[0..3]);
            let (y1, u1, v1) = yuv(&pair[3..6]);
            let c = |x: f32| x.round().clamp(0.0, 255.0) as u8;
            out.extend([c(y0), c((u0 + u1) / 2.0), c(y1), c((v0 + v1) / 2.0)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> image::RgbImage {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/coffee.png");
        image::open(p).unwrap().to_rgb8()
    }

    /// Removes every DHT segment, as MJPEG cameras send frames.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while jpeg[i] == 0xff && jpeg[i + 1] != 0xda {
            let len = u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]) as usize;
            if jpeg[i + 1] != 0xc4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out.extend_from_slice(&jpeg[i..]);
        out
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_the_full_jpeg() {
        let img = photo();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(&img).unwrap();
        let camera = strip_dht(&jpeg);
        assert!(!has_dht(&camera) && has_dht(&jpeg));
        let full = mjpeg_frame(&jpeg, 0, "cam").unwrap();
        let fixed = mjpeg_frame(&camera, 1, "cam").unwrap();
        assert_eq!((fixed.width, fixed.height, fixed.format), (600, 400, PixelFormat::Rgb8));
        assert_eq!(full.data, fixed.data, "standard tables restore the exact image");
        let err: i64 = fixed.data.iter().zip(img.as_raw()).map(|(&a, &b)| (a as i64 - b as i64).abs()).sum();
        assert!((err as f64 / fixed.data.len() as f64) < 6.0, "mean abs error {}", err as f64 / fixed.data.len() as f64);
    }

    #[test]
    fn yuyv_round_trip_of_a_real_photo() {
        let img = photo();
        let yuyv = rgb_to_yuyv(img.as_raw(), 600);
        let f = yuyv_frame(&yuyv, 600, 400, 0, "cam").unwrap();
        let back = f.to_rgb8();
        let mean: f64 = back.iter().zip(img.as_raw()).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / back.len() as f64;
        assert!(mean < 4.0, "mean abs error {mean} after 4:2:2 subsampling");
        assert!(yuyv_frame(&yuyv[..100], 600, 400, 1, "cam").is_err(), "short buffers are refused");
    }

    #[test]
    fn grey_buffer_keeps_its_bytes() {
        let f = grey_frame(&[1, 2, 3, 4, 9, 9], 2, 2, 0, "cam").unwrap();
        assert_eq!(f.data, vec![1, 2, 3, 4]);
        assert_eq!(f.to_rgb8()[..6], [1, 1, 1, 2, 2, 2]);
    }
}
