//! The planner orders every acyclic graph correctly and finds a real cycle in every cyclic one.

use ci::plan::{Graph, GraphError};
use proptest::prelude::*;

/// A random graph: job `i` may need any job (so cycles are possible).
fn arbitrary_graph(n: usize, edges: &[(usize, usize)]) -> Graph {
    let ids: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    let mut needs: Vec<Vec<&str>> = vec![Vec::new(); n];
    for &(from, to) in edges {
        needs[from % n].push(&ids[to % n]);
    }
    let (graph, errors) = Graph::build(ids.iter().map(String::as_str).zip(needs));
    assert!(errors.is_empty());
    graph
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn acyclic_graphs_are_ordered_dependencies_first(n in 1usize..40, raw in prop::collection::vec((0usize..40, 0usize..40), 0..120)) {
        // Only edges from a later job to an earlier one: acyclic by construction.
        let edges: Vec<(usize, usize)> = raw.into_iter().map(|(a, b)| (a % n, b % n)).filter(|(a, b)| a > b).collect();
        let graph = arbitrary_graph(n, &edges);
        let order = graph.topological_order().expect("acyclic");
        prop_assert_eq!(order.len(), n);
        let position: Vec<usize> = (0..n).map(|job| order.iter().position(|&o| o == job).unwrap()).collect();
        for (job, needs) in graph.needs.iter().enumerate() {
            for &need in needs {
                prop_assert!(position[need] < position[job], "{} runs before its need {}", job, need);
            }
        }
    }

    #[test]
    fn reported_cycles_are_real(n in 1usize..15, raw in prop::collection::vec((0usize..15, 0usize..15), 1..40)) {
        let graph = arbitrary_graph(n, &raw);
        match graph.topological_order() {
            Ok(order) => {
                // No cycle claimed: the order must then be valid.
                for (job, needs) in graph.needs.iter().enumerate() {
                    for &need in needs {
                        let a = order.iter().position(|&o| o == need).unwrap();
                        let b = order.iter().position(|&o| o == job).unwrap();
                        prop_assert!(a < b);
                    }
                }
            }
            Err(GraphError::Cycle(cycle)) => {
                prop_assert!(!cycle.is_empty());
                for (i, &job) in cycle.iter().enumerate() {
                    let next = cycle[(i + 1) % cycle.len()];
                    prop_assert!(graph.needs[job].contains(&next), "{} does not need {} in {:?}", job, next, cycle);
                }
            }
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn closure_contains_all_transitive_needs(n in 1usize..30, raw in prop::collection::vec((0usize..30, 0usize..30), 0..60), pick in 0usize..30) {
        let edges: Vec<(usize, usize)> = raw.into_iter().map(|(a, b)| (a % n, b % n)).filter(|(a, b)| a > b).collect();
        let graph = arbitrary_graph(n, &edges);
        let closure = graph.closure(&[pick % n]);
        for &job in &closure {
            for need in &graph.needs[job] {
                prop_assert!(closure.contains(need));
            }
        }
    }
}
