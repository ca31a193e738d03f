//! Where each video of a composite egress goes in the output frame (sans-IO).
//!
//! - `grid`: the videos in rows and columns as square as possible, all the same size, in the order they
//!   arrived; a last row that is not full is centred.
//! - `speaker`: the current speaker large on the left (three quarters of the width), the others stacked in a
//!   column on the right.
//!
//! Each video is scaled into its cell keeping its aspect ratio (black bars fill the rest).

use serde::{Deserialize, Serialize};

/// How several videos share the output frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Equal cells in rows and columns.
    #[default]
    Grid,
    /// The loudest participant large, the others small beside it.
    Speaker,
}

/// A rectangle of the output frame, in pixels (all even, as I420 needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

fn even(n: u32) -> u32 {
    n & !1
}

/// The cells of `n` videos in a `width` × `height` frame; with `Speaker`, video `speaker` (an index below
/// `n`) gets the large one.
pub fn cells(layout: Layout, n: usize, speaker: usize, width: u32, height: u32) -> Vec<Cell> {
    match layout {
        Layout::Grid => grid(n, width, height),
        Layout::Speaker => speaker_cells(n, speaker.min(n.saturating_sub(1)), width, height),
    }
}

fn grid(n: usize, width: u32, height: u32) -> Vec<Cell> {
    if n == 0 {
        return Vec::new();
    }
    let n = n as u32;
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let (cell_w, cell_h) = (even(width / cols), even(height / rows));
    (0..n)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            // Videos in this row: a full row, or what is left for the last one.
            let in_row = if row + 1 == rows { n - row * cols } else { cols };
            let left = even((width - in_row * cell_w) / 2);
            Cell {
                x: left + col * cell_w,
                y: even((height - rows * cell_h) / 2) + row * cell_h,
                width: cell_w,
                height: cell_h,
            }
        })
        .collect()
}

fn speaker_cells(n: usize, speaker: usize, width: u32, height: u32) -> Vec<Cell> {
    if n <= 1 {
        return grid(n, width, height);
    }
    let main_w = even(width * 3 / 4);
    let side_w = even(width - main_w);
    let others = (n - 1) as u32;
    // Side cells keep the output's aspect ratio, and all fit in the height.
    let side_h = even((side_w * height / width).min(height / others));
    let top = even((height - others * side_h) / 2);
    let mut next = 0;
    (0..n)
        .map(|i| {
            if i == speaker {
                return Cell {
                    x: 0,
                    y: 0,
                    width: main_w,
                    height: even(height),
                };
            }
            let cell = Cell {
                x: main_w,
                y: top + next * side_h,
                width: side_w,
                height: side_h,
            };
            next += 1;
            cell
        })
        .collect()
}

/// Which of `layers` simulcast layers (best first, each half the size of the one before, the best about the
/// output's size) suits a cell `cell_height` tall in an output `height` tall: the smallest that is not
/// smaller than the cell.
pub fn layer_for(cell_height: u32, height: u32, layers: usize) -> usize {
    let (mut index, mut layer_height) = (0, height);
    while index + 1 < layers && layer_height / 2 >= cell_height {
        layer_height /= 2;
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inside(cell: &Cell, w: u32, h: u32) -> bool {
        cell.x + cell.width <= w && cell.y + cell.height <= h && cell.width > 0 && cell.height > 0
    }

    fn overlap(a: &Cell, b: &Cell) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    #[test]
    fn one_video_fills_the_frame() {
        assert_eq!(
            cells(Layout::Grid, 1, 0, 1280, 720),
            [Cell {
                x: 0,
                y: 0,
                width: 1280,
                height: 720
            }]
        );
        assert_eq!(
            cells(Layout::Speaker, 1, 0, 1280, 720),
            cells(Layout::Grid, 1, 0, 1280, 720)
        );
        assert!(cells(Layout::Grid, 0, 0, 1280, 720).is_empty());
    }

    #[test]
    fn grids_are_square_even_and_disjoint() {
        for n in 1..=16 {
            let c = cells(Layout::Grid, n, 0, 1280, 720);
            assert_eq!(c.len(), n);
            for (i, a) in c.iter().enumerate() {
                assert!(inside(a, 1280, 720), "{n}: {a:?}");
                assert!(a.x % 2 == 0 && a.y % 2 == 0 && a.width % 2 == 0 && a.height % 2 == 0);
                for b in &c[i + 1..] {
                    assert!(!overlap(a, b), "{n}: {a:?} {b:?}");
                }
            }
        }
        // Three: two on top, the third centred below.
        let three = cells(Layout::Grid, 3, 0, 1280, 720);
        assert_eq!(
            (three[0].x, three[0].y, three[0].width, three[0].height),
            (0, 0, 640, 360)
        );
        assert_eq!((three[1].x, three[1].y), (640, 0));
        assert_eq!((three[2].x, three[2].y), (320, 360));
        // Four: 2 × 2; five: 3 columns.
        let four = cells(Layout::Grid, 4, 0, 1280, 720);
        assert_eq!((four[3].x, four[3].y), (640, 360));
        assert_eq!(cells(Layout::Grid, 5, 0, 1280, 720)[0].width, 426);
    }

    #[test]
    fn small_cells_take_smaller_layers() {
        assert_eq!(layer_for(720, 720, 3), 0, "full frame: the best layer");
        assert_eq!(layer_for(360, 720, 3), 1, "2 x 2: half size");
        assert_eq!(
            layer_for(240, 720, 3),
            1,
            "3 x 3: still half, not a quarter that would be upscaled"
        );
        assert_eq!(layer_for(180, 720, 3), 2);
        assert_eq!(layer_for(90, 720, 3), 2, "no fourth layer");
        assert_eq!(layer_for(90, 720, 1), 0);
        assert_eq!(layer_for(90, 720, 0), 0);
    }

    #[test]
    fn the_speaker_gets_the_large_cell() {
        for n in 2..=8 {
            for speaker in 0..n {
                let c = cells(Layout::Speaker, n, speaker, 1280, 720);
                assert_eq!(c[speaker].width, 960, "{n} {speaker}");
                for (i, a) in c.iter().enumerate() {
                    assert!(inside(a, 1280, 720), "{n}: {a:?}");
                    if i != speaker {
                        assert!(a.width < 960);
                    }
                    for b in &c[i + 1..] {
                        assert!(!overlap(a, b), "{n}: {a:?} {b:?}");
                    }
                }
            }
        }
        // A speaker index past the end (the loudest left) falls back to the last video.
        assert_eq!(cells(Layout::Speaker, 3, 7, 1280, 720)[2].width, 960);
    }
}
