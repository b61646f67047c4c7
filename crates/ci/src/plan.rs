//! The job graph: `needs` resolution, cycle detection, topological order and job selection.

use std::collections::BTreeSet;

/// A job graph by index: `needs[i]` lists the jobs job `i` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub ids: Vec<String>,
    pub needs: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// Job `job` needs `missing`, which does not exist.
    UnknownNeed { job: usize, missing: String },
    /// A cycle, as job indices where each needs the next and the last needs the first.
    Cycle(Vec<usize>),
}

impl Graph {
    /// Builds the graph from `(id, needs)` pairs, reporting every unknown `needs` entry.
    pub fn build<'a>(jobs: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>) -> (Graph, Vec<GraphError>) {
        let jobs: Vec<(&str, Vec<&str>)> = jobs.into_iter().collect();
        let ids: Vec<String> = jobs.iter().map(|(id, _)| id.to_string()).collect();
        let mut errors = Vec::new();
        let mut needs = Vec::with_capacity(jobs.len());
        for (index, (_, wanted)) in jobs.iter().enumerate() {
            let mut resolved = Vec::new();
            for name in wanted {
                match ids.iter().position(|id| id == name) {
                    Some(target) if !resolved.contains(&target) => resolved.push(target),
                    Some(_) => {}
                    None => errors.push(GraphError::UnknownNeed { job: index, missing: name.to_string() }),
                }
            }
            needs.push(resolved);
        }
        (Graph { ids, needs }, errors)
    }

    /// Jobs in an order where each comes after everything it needs, or the first cycle found.
    pub fn topological_order(&self) -> Result<Vec<usize>, GraphError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut marks = vec![Mark::New; self.ids.len()];
        let mut order = Vec::with_capacity(self.ids.len());
        for root in 0..self.ids.len() {
            if marks[root] != Mark::New {
                continue;
            }
            // Iterative depth-first search; `path` holds (node, next need to visit).
            let mut path: Vec<(usize, usize)> = vec![(root, 0)];
            marks[root] = Mark::Active;
            while let Some(&mut (node, ref mut next)) = path.last_mut() {
                if let Some(&need) = self.needs[node].get(*next) {
                    *next += 1;
                    match marks[need] {
                        Mark::New => {
                            marks[need] = Mark::Active;
                            path.push((need, 0));
                        }
                        Mark::Active => {
                            let start = path.iter().position(|(n, _)| *n == need).unwrap_or(0);
                            let cycle: Vec<usize> = path[start..].iter().map(|(n, _)| *n).collect();
                            return Err(GraphError::Cycle(cycle));
                        }
                        Mark::Done => {}
                    }
                } else {
                    marks[node] = Mark::Done;
                    order.push(node);
                    path.pop();
                }
            }
        }
        Ok(order)
    }

    /// The selected jobs and everything they need, transitively.
    pub fn closure(&self, selected: &[usize]) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<usize> = selected.to_vec();
        while let Some(job) = stack.pop() {
            if out.insert(job) {
                stack.extend(self.needs[job].iter().copied());
            }
        }
        out
    }

    /// Displays a cycle as `a -> b -> c -> a`.
    pub fn describe_cycle(&self, cycle: &[usize]) -> String {
        let mut names: Vec<&str> = cycle.iter().map(|&i| self.ids[i].as_str()).collect();
        if let Some(first) = names.first().copied() {
            names.push(first);
        }
        names.join(" -> ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&'static str, &[&'static str])]) -> Graph {
        let (graph, errors) = Graph::build(edges.iter().map(|(id, needs)| (*id, needs.to_vec())));
        assert!(errors.is_empty(), "{errors:?}");
        graph
    }

    #[test]
    fn orders_dependencies_first() {
        let g = graph(&[("deploy", &["test", "build"]), ("test", &["build"]), ("build", &[])]);
        let order: Vec<&str> = g.topological_order().unwrap().iter().map(|&i| g.ids[i].as_str()).collect();
        assert_eq!(order, ["build", "test", "deploy"]);
    }

    #[test]
    fn names_the_cycle() {
        let g = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        let Err(GraphError::Cycle(cycle)) = g.topological_order() else { panic!("expected a cycle") };
        assert_eq!(g.describe_cycle(&cycle), "a -> c -> b -> a");
        let g = graph(&[("self", &["self"])]);
        let Err(GraphError::Cycle(cycle)) = g.topological_order() else { panic!("expected a cycle") };
        assert_eq!(g.describe_cycle(&cycle), "self -> self");
    }

    #[test]
    fn unknown_needs_are_reported() {
        let (_, errors) = Graph::build([("a", vec!["nope"])]);
        assert_eq!(errors, [GraphError::UnknownNeed { job: 0, missing: "nope".into() }]);
    }

    #[test]
    fn closure_follows_needs() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])]);
        assert_eq!(g.closure(&[2]).into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }
}
