"""Product recipes: which regions of the frame are inspected, with which model, under which rule.

A line runs several part types. Each recipe has a name, the id the line uses
for it (`external_id`, e.g. a PLC's recipe number), a model file, one or more
named inspection regions (each may carry its own rule and threshold, else the
recipe's) and the decision rule with its threshold. Recipes live in the
inspection log: every save is a new, numbered, append-only version with its
audit record, so each logged inspection names the exact version that judged it.
Only admins change recipes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from app.store import InspectionStore
from app.users import SETUP_USER, User, UserDirectory
from app.verdict import VerdictRule
from detector.regions import Roi

DEFAULT_RECIPE = "default"
WHOLE_FRAME = "whole frame"
# threshold_model of a stored recipe whose explicit thresholds were saved before recipes recorded the model:
# nobody can tell which model's scores they were set on, so an admin reviews them before it judges again.
UNRECORDED = "unrecorded"
_NAME = re.compile(r"^[\w][\w .+\-/()#]{0,63}$", re.UNICODE)


@dataclass(frozen=True)
class Region:
    """One named inspection region; `roi` None is the whole frame; `rule`/`threshold` None: the recipe's."""

    name: str
    roi: Roi | None = None
    rule: VerdictRule | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "roi": self.roi.to_list() if self.roi else None,
                "rule": self.rule.to_dict() if self.rule else None, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: Any) -> Region:
        if not isinstance(d, dict):
            raise ValueError(f"a region must be a mapping, got {type(d).__name__}")
        return cls(name=_name(d.get("name"), "region name"),
                   roi=None if d.get("roi") is None else Roi.from_list(d["roi"]),
                   rule=None if d.get("rule") is None else VerdictRule.from_dict(d["rule"]),
                   threshold=_threshold(d.get("threshold")))


@dataclass(frozen=True)
class Recipe:
    name: str
    regions: tuple[Region, ...] = (Region(WHOLE_FRAME),)
    rule: VerdictRule = field(default_factory=VerdictRule)
    threshold: float | None = None  # None: the model's default threshold
    model_path: str | None = None  # None: the shipped default model
    # The model (Detector.weights_id) its explicit thresholds were set for (UNRECORDED: saved before recipes
    # recorded it; None: no explicit threshold, or a recipe built in code). Another model's scores sit
    # elsewhere: inspections under a recipe bound to other weights are refused until an admin saves it again.
    threshold_model: str | None = None
    external_id: str = ""  # what the line calls it; default: the name
    version: int = 0  # 0: never saved

    def __post_init__(self) -> None:
        _name(self.name, "recipe name")
        if not self.regions:
            raise ValueError(f"recipe {self.name!r} needs at least one inspection region")
        names = [r.name.casefold() for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"recipe {self.name!r}: two regions have the same name")
        _threshold(self.threshold)

    @property
    def line_id(self) -> str:
        return self.external_id or self.name

    def rule_for(self, region: Region) -> VerdictRule:
        return region.rule or self.rule

    @property
    def explicit_thresholds(self) -> bool:
        """An admin set a threshold (for the recipe or a region) instead of following the model's default."""
        return self.threshold is not None or any(r.threshold is not None for r in self.regions)

    def bound_to(self, weights_id: str) -> Recipe:
        """This recipe with its explicit thresholds confirmed for the model `weights_id`."""
        return replace(self, threshold_model=weights_id if self.explicit_thresholds else None)

    @property
    def thresholds_origin(self) -> str:
        """Which model its explicit thresholds were set for, in words."""
        if self.threshold_model == UNRECORDED:
            return "saved before recipes recorded the model they were set for"
        return f"set for model {self.threshold_model}" if self.threshold_model else "not yet bound to a model"

    def threshold_model_problem(self, weights_id: str) -> str:
        """Why this recipe's thresholds may not judge parts with the model `weights_id` ('' when they may)."""
        if not self.explicit_thresholds or self.threshold_model in (None, weights_id):
            return ""
        return (f"recipe {self.name!r} v{self.version}: its thresholds were {self.thresholds_origin}, but the model "
                f"is {weights_id}, whose scores may sit elsewhere; an admin reviews them in Recipes (saving it "
                f"confirms them for this model)")

    def threshold_for(self, region: Region, model_default: float) -> float:
        for value in (region.threshold, self.threshold):
            if value is not None:
                return value
        return model_default

    def definition(self) -> dict[str, Any]:
        """What is versioned: everything but name, external id and version."""
        d = {"regions": [r.to_dict() for r in self.regions], "rule": self.rule.to_dict(),
             "threshold": self.threshold, "model_path": self.model_path}
        if self.threshold_model is not None:  # absent rather than null: earlier versions stay as they were
            d["threshold_model"] = self.threshold_model
        return d

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "external_id": self.external_id, "version": self.version, **self.definition()}

    @classmethod
    def from_definition(cls, name: str, external_id: str, version: int, d: Any) -> Recipe:
        if not isinstance(d, dict):
            raise ValueError(f"recipe {name!r}: definition must be a mapping")
        regions = d.get("regions") or []
        if not isinstance(regions, list):
            raise ValueError(f"recipe {name!r}: regions must be a list")
        model = d.get("model_path")
        if model is not None and not isinstance(model, str):
            raise ValueError(f"recipe {name!r}: model_path must be text")
        bound = d.get("threshold_model")
        if bound is not None and not isinstance(bound, str):
            raise ValueError(f"recipe {name!r}: threshold_model must be text")
        return cls(name=name, external_id=str(external_id or ""), version=int(version),
                   regions=tuple(Region.from_dict(r) for r in regions), rule=VerdictRule.from_dict(d.get("rule") or {}),
                   threshold=_threshold(d.get("threshold")), model_path=model or None, threshold_model=bound or None)

    @classmethod
    def from_dict(cls, d: Any) -> Recipe:
        if not isinstance(d, dict):
            raise ValueError("a recipe must be a mapping")
        return cls.from_definition(_name(d.get("name"), "recipe name"), d.get("external_id", ""), int(d.get("version", 0)), d)


def _name(value: Any, what: str) -> str:
    text = str(value or "").strip()
    if not _NAME.match(text):
        raise ValueError(f"{what} must be 1-64 letters, digits, spaces or . + - / ( ) #, got {value!r}")
    return text


def _threshold(value: Any) -> float | None:
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number within 0..1, got {value!r}") from None
    if not 0.0 <= t <= 1.0:  # NaN fails this too
        raise ValueError(f"threshold must be within 0..1, got {value!r}")
    return t


class RecipeBook:
    """The recipes in one inspection log; changes by admins only, each one a new version and an audit record."""

    def __init__(self, store: InspectionStore, users: UserDirectory | None = None):
        self.store = store
        self.users = users or UserDirectory(store)

    def _from_row(self, row: dict) -> Recipe:
        recipe = Recipe.from_definition(row["name"], row["external_id"], row["version"], json.loads(row["definition"]))
        if recipe.explicit_thresholds and recipe.threshold_model is None:
            recipe = replace(recipe, threshold_model=UNRECORDED)  # saved before the binding existed
        return recipe

    def list(self) -> list[Recipe]:
        """The current version of every recipe not deleted, by name."""
        return [self._from_row(r) for r in self.store.current_recipes()]

    def get(self, name: str) -> Recipe | None:
        """The current version of a recipe by name (any case), or by the line's external id."""
        key = name.strip().casefold()
        recipes = self.list()
        return (next((r for r in recipes if r.name.casefold() == key), None)
                or next((r for r in recipes if r.external_id and r.external_id.casefold() == key), None))

    def version(self, name: str, version: int) -> Recipe | None:
        row = next((r for r in self.store.recipe_versions(name) if r["version"] == version), None)
        return None if row is None or row["deleted"] else self._from_row(row)

    def history(self, name: str) -> list[dict]:
        """Every version of a recipe (deleted ones too): version, when, who, the definition."""
        return self.store.recipe_versions(name)

    def save(self, recipe: Recipe, by: User, reason: str = "") -> Recipe:
        """Save a new version (the first one creates the recipe); returns it with its version number."""
        self._check_external_id(recipe)
        return self._write(recipe, by, "recipe.save", reason, deleted=False)

    def copy(self, name: str, new_name: str, by: User) -> Recipe:
        source = self.get(name)
        if source is None:
            raise ValueError(f"no recipe named {name!r}")
        if self.get(new_name) is not None:
            raise ValueError(f"a recipe named {new_name!r} exists already")
        return self.save(replace(source, name=_name(new_name, "recipe name"), external_id="", version=0), by,
                         reason=f"copy of {source.name} v{source.version}")

    def delete(self, name: str, by: User, reason: str = "") -> None:
        recipe = self.get(name)
        if recipe is None:
            raise ValueError(f"no recipe named {name!r}")
        if len(self.list()) == 1:
            raise ValueError("the last recipe cannot be deleted: the station needs one to inspect")
        self._write(recipe, by, "recipe.delete", reason, deleted=True)

    def ensure_default(self, roi: Roi | None, rule: VerdictRule, threshold: float | None, model_path: str | None,
                       threshold_model: str | None = None) -> bool:
        """First start with recipes: today's region and rule become the "default" recipe (nothing lost).

        `threshold_model`: the weights the settings' threshold is applied with now. Returns whether it was
        created. Recorded as done by the station itself.
        """
        if self.store.recipe_versions():
            return False
        region = Region(WHOLE_FRAME if roi is None else "region", roi)
        recipe = Recipe(DEFAULT_RECIPE, (region,), rule, threshold, model_path)
        if threshold_model is not None:
            recipe = recipe.bound_to(threshold_model)
        self._write(recipe, SETUP_USER, "recipe.save", "created from the station settings (single region and rule)",
                    deleted=False, check=False)
        return True

    def _check_external_id(self, recipe: Recipe) -> None:
        if not recipe.external_id:
            return
        for other in self.list():
            if other.name.casefold() != recipe.name.casefold() and recipe.external_id.casefold() in (
                    other.external_id.casefold(), other.name.casefold()):
                raise ValueError(f"external id {recipe.external_id!r} is used by recipe {other.name!r} already")

    def _write(self, recipe: Recipe, by: User, action: str, reason: str, deleted: bool, check: bool = True) -> Recipe:
        versions = self.store.recipe_versions(recipe.name)
        last = versions[-1] if versions else None
        old = None if last is None else {"version": last["version"], "external_id": last["external_id"],
                                         **json.loads(last["definition"])}
        new = {"external_id": recipe.external_id, **recipe.definition()}
        with self.store.write() as tx:
            signer = self.users.require(by, "settings", tx) if check else by
            version = tx.save_recipe_version(name=recipe.name, external_id=recipe.external_id,
                                             definition_json=json.dumps(recipe.definition(), sort_keys=True), deleted=deleted,
                                             user=signer.name, audit_action=action, old=old,
                                             new={"name": recipe.name, **new}, reason=reason)
        return replace(recipe, version=version)
