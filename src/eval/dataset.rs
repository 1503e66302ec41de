//! MVTec AD folder layout: `CATEGORY/train/good`, `CATEGORY/test/{good,KIND}`,
//! `CATEGORY/ground_truth/KIND/NAME_mask.png`.

use std::path::{Path, PathBuf};

use crate::enroll::{EnrollError, list_images};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: cannot read the data set: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no categories (folders with train/good inside); expected the MVTec layout CATEGORY/train/good, CATEGORY/test/KIND")]
    Empty { path: PathBuf },
    #[error("{path}: no such category; found: {found}")]
    UnknownCategory { path: PathBuf, found: String },
    #[error("{path}: missing ground-truth mask for {image}")]
    MissingMask { path: PathBuf, image: PathBuf },
    #[error(transparent)]
    List(#[from] EnrollError),
}

#[derive(Debug, Clone)]
pub struct TestImage {
    pub path: PathBuf,
    /// `good` or the defect kind.
    pub kind: String,
    /// Pixel mask for defective images.
    pub mask: Option<PathBuf>,
}

impl TestImage {
    pub fn defective(&self) -> bool {
        self.kind != "good"
    }
}

#[derive(Debug, Clone)]
pub struct Category {
    pub name: String,
    pub train: Vec<PathBuf>,
    pub test: Vec<TestImage>,
}

impl Category {
    /// Defect kinds present in the test split, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.test.iter().filter(|t| t.defective()).map(|t| t.kind.clone()).collect();
        k.sort();
        k.dedup();
        k
    }

    /// Few-shot split: moves the first `k` images (by name) of every defect
    /// kind out of the test split and returns them, so that an image used
    /// for training is never scored.
    pub fn take_fewshot(&mut self, k: usize) -> Vec<TestImage> {
        let mut taken = Vec::new();
        for kind in self.kinds() {
            let mut of_kind: Vec<usize> = (0..self.test.len()).filter(|&i| self.test[i].kind == kind).collect();
            of_kind.sort_by(|&a, &b| self.test[a].path.cmp(&self.test[b].path));
            of_kind.truncate(k);
            taken.extend(of_kind);
        }
        taken.sort_unstable();
        let mut out = Vec::with_capacity(taken.len());
        for i in taken.into_iter().rev() {
            out.push(self.test.remove(i));
        }
        out.reverse();
        out
    }
}

fn subdirs(p: &Path) -> Result<Vec<String>, DatasetError> {
    let rd = std::fs::read_dir(p).map_err(|source| DatasetError::Read { path: p.into(), source })?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    Ok(out)
}

/// Categories under `root`, all or those named in `only`.
pub fn discover(root: &Path, only: &[String]) -> Result<Vec<Category>, DatasetError> {
    let names: Vec<String> = subdirs(root)?.into_iter().filter(|n| root.join(n).join("train/good").is_dir()).collect();
    if names.is_empty() {
        return Err(DatasetError::Empty { path: root.into() });
    }
    for o in only {
        if !names.contains(o) {
            return Err(DatasetError::UnknownCategory { path: root.join(o), found: names.join(", ") });
        }
    }
    names.into_iter().filter(|n| only.is_empty() || only.contains(n)).map(|n| load_category(root, &n)).collect()
}

fn load_category(root: &Path, name: &str) -> Result<Category, DatasetError> {
    let dir = root.join(name);
    let train = list_images(&dir.join("train/good"))?;
    let mut test = Vec::new();
    for kind in subdirs(&dir.join("test"))? {
        for path in list_images(&dir.join("test").join(&kind))? {
            let mask = if kind == "good" {
                None
            } else {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                let m = dir.join("ground_truth").join(&kind).join(format!("{stem}_mask.png"));
                if !m.is_file() {
                    return Err(DatasetError::MissingMask { path: m, image: path });
                }
                Some(m)
            };
            test.push(TestImage { path, kind: kind.clone(), mask });
        }
    }
    Ok(Category { name: name.into(), train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(kind: &str, name: &str) -> TestImage {
        TestImage { path: PathBuf::from(format!("/d/test/{kind}/{name}.png")), kind: kind.into(), mask: (kind != "good").then(|| PathBuf::from("m.png")) }
    }

    #[test]
    fn fewshot_moves_k_per_kind_and_leaves_the_rest() {
        let mut c = Category {
            name: "c".into(),
            train: vec![],
            test: vec![image("good", "000"), image("hole", "001"), image("hole", "000"), image("scratch", "000"), image("hole", "002"), image("good", "001")],
        };
        let few = c.take_fewshot(2);
        let names: Vec<String> = few.iter().map(|t| format!("{}/{}", t.kind, t.path.file_stem().unwrap().to_string_lossy())).collect();
        assert_eq!(names, ["hole/001", "hole/000", "scratch/000"]);
        assert_eq!(c.test.len(), 3);
        assert!(c.test.iter().all(|t| !few.iter().any(|f| f.path == t.path)), "no image is both trained on and scored");
        assert_eq!(c.test.iter().filter(|t| t.kind == "hole").count(), 1);
        assert_eq!(c.take_fewshot(0).len(), 0);
    }
}
