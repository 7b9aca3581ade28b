//! Circular calculation detection for the importer's "circular calculation: a → b → a".

use std::collections::HashMap;

/// Finds a cycle in a dependency graph given as `(name, names it depends on)`. Returns the
/// cycle as a path that starts and ends with the same name (`["a", "b", "a"]`; a calculation
/// that reads itself is `["a", "a"]`), or `None`. Dependencies that are not nodes (ordinary
/// questions) are ignored. Deterministic: nodes and dependencies are visited in the order given.
#[must_use]
pub fn find_cycle(nodes: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
    let mut marks = vec![Mark::New; nodes.len()];
    for root in 0..nodes.len() {
        if marks[root] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (node, next dependency to look at).
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::OnPath;
        while let Some(top) = stack.last_mut() {
            let node = top.0;
            let deps = &nodes[node].1;
            let Some(dep) = deps.get(top.1) else {
                marks[node] = Mark::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            let Some(&d) = index.get(dep.as_str()) else { continue };
            match marks[d] {
                Mark::Done => {}
                Mark::New => {
                    marks[d] = Mark::OnPath;
                    stack.push((d, 0));
                }
                Mark::OnPath => {
                    let start = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[start..].iter().map(|(n, _)| nodes[*n].0.clone()).collect();
                    cycle.push(nodes[d].0.clone());
                    return Some(cycle);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    fn graph(edges: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        edges.iter().map(|(n, d)| ((*n).to_owned(), d.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn finds_the_cycle_path() {
        let g = graph(&[("bmi", &["weight", "height_m"]), ("height_m", &["height_cm"]), ("height_cm", &["bmi"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["bmi", "height_m", "height_cm", "bmi"]);
    }

    #[test]
    fn two_node_and_self_cycles() {
        assert_eq!(find_cycle(&graph(&[("a", &["b"]), ("b", &["a"])])).unwrap(), ["a", "b", "a"]);
        assert_eq!(find_cycle(&graph(&[("a", &["a"])])).unwrap(), ["a", "a"]);
    }

    #[test]
    fn no_cycle_in_a_diamond() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &["age"])]);
        assert_eq!(find_cycle(&g), None);
        assert_eq!(find_cycle(&[]), None);
    }

    #[test]
    fn cycle_not_reachable_from_the_first_node() {
        let g = graph(&[("a", &[]), ("x", &["y"]), ("y", &["z"]), ("z", &["y"])]);
        assert_eq!(find_cycle(&g).unwrap(), ["y", "z", "y"]);
    }
}
