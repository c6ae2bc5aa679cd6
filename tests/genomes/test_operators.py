"""Every registered operator, for every genome family: DEAP conventions and picklability."""

import pickle
import random

import pytest
from conftest import FAMILY_CASES, tiny_benchmark, tiny_model

from deap_llmmerge import GENOMES, InvalidGenomeError, make_toolbox

OPERATORS = ["mate", "mutate", "select", "individual", "population", "evaluate", "map"]


def test_the_contract_cases_name_registered_families_only():
    from conftest import FAMILY_VARIANTS

    assert set(FAMILY_VARIANTS) <= set(GENOMES) and {case["genome"] for case in FAMILY_CASES.values()} == set(GENOMES)


@pytest.fixture(scope="module", params=list(FAMILY_CASES))
def toolbox(request):
    return make_toolbox([tiny_model("llama", 1), tiny_model("llama", 2)], tiny_benchmark(), mutation_rate=1.0,
                        **FAMILY_CASES[request.param])


def test_every_operator_is_registered_and_pickles(toolbox):
    for name in OPERATORS:
        restored = pickle.loads(pickle.dumps(getattr(toolbox, name)))
        assert callable(restored)


def test_variation_operators_return_tuples_of_the_same_type(toolbox):
    random.seed(0)
    a, b = toolbox.individual(), toolbox.individual()
    kind = type(a)
    children = toolbox.mate(a, b)
    assert isinstance(children, tuple) and len(children) == 2 and all(type(c) is kind for c in children)
    mutants = toolbox.mutate(a)
    assert isinstance(mutants, tuple) and len(mutants) == 1 and type(mutants[0]) is kind
    assert mutants[0] is a
    restored = pickle.loads(pickle.dumps(a))
    assert type(restored).__name__ == kind.__name__ and restored == a
    assert restored.fitness.weights == a.fitness.weights


def test_mutation_changes_genes_and_keeps_them_valid(toolbox):
    random.seed(1)
    individual = toolbox.pure(source=0)
    before = list(individual)
    (mutant,) = toolbox.mutate(individual)
    assert list(mutant) != before
    toolbox.evaluate.func.decode(mutant)  # still decodes


def test_population_starts_with_every_pure_source(toolbox):
    population = toolbox.population(n=5)
    assert population[0] == toolbox.pure(source=0) and population[1] == toolbox.pure(source=1)
    assert len(population) == 5


def test_choice_mutation_moves_a_part_to_another_source():
    from deap_llmmerge.genomes.choice import mutChoice

    random.seed(0)
    (mutant,) = mutChoice([0, 1, 2, 0], n_sources=3, indpb=1.0)
    assert all(new != old for new, old in zip(mutant, [0, 1, 2, 0]))


def test_blend_mutation_keeps_weights_normalised_and_in_range():
    from deap_llmmerge.genomes.blend import mutBlend

    random.seed(0)
    (mutant,) = mutBlend([1.0, 0.0, 0.5, 0.5], n_sources=2, indpb=1.0, sigma=0.5)
    assert all(0.0 <= w <= 1.0 for w in mutant)
    assert sum(mutant[:2]) == pytest.approx(1) and sum(mutant[2:]) == pytest.approx(1)


def test_crossover_swaps_whole_parts_of_blend_genomes():
    from deap_llmmerge.genomes.operators import cxUniformParts

    random.seed(3)
    a, b = cxUniformParts([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], indpb=0.5, genes_per_part=2)
    pairs = {(a[i], a[i + 1]) for i in range(0, 6, 2)}
    assert pairs <= {(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)}
    assert sorted(a + b) == list(range(1, 13))


def test_decode_names_the_bad_gene():
    from deap_llmmerge import GenomeSpace
    from deap_llmmerge.genomes.blend import decodeBlend
    from deap_llmmerge.genomes.choice import decodeChoice

    with pytest.raises(InvalidGenomeError, match="choice gene for layers.0 is 5"):
        decodeChoice([0, 5], GenomeSpace(("embed", "layers.0"), 2))
    with pytest.raises(InvalidGenomeError, match="blend weights for embed"):
        decodeBlend([-1.0, 0.5], GenomeSpace(("embed",), 2))
