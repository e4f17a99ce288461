{{/*
The alerting rules, as a Prometheus rules file body ("groups: ..."). This is the one source of
truth for the alerts: templates/prometheusrule.yaml puts it under a PrometheusRule's spec, and
scripts/render-rules.sh renders it with the default values into the plain rules file
deploy/prometheus/imagebloat-rules.yaml (scripts/chart-check.sh fails when that file drifts).

Text between backquotes is Prometheus template text, passed through Helm unchanged and expanded by
Prometheus when the alert fires ({{ $labels.namespace }}, {{ $value }}).

Conventions (kube-prometheus): a severity label, summary (static), description (templated) and
runbook_url annotations; the image alerts keep the namespace label of the analyzed workload, so
they route to the team that owns it.
*/}}
{{- define "imagebloat.ruleGroups" -}}
{{- $r := .Values.prometheusRule }}
{{- $a := $r.alerts }}
{{- $by := "namespace, workload_kind, workload, container, image" }}
{{- $extra := $r.additionalRuleLabels }}
{{- $workload := `{{ $labels.workload_kind }} {{ $labels.namespace }}/{{ $labels.workload }} (container {{ $labels.container }}, image {{ $labels.image }})` }}
{{- $report := `Its ImageReport (kubectl get imagereport -n {{ $labels.namespace }} {{ $labels.workload_kind | toLower }}-{{ $labels.workload }} -o yaml) lists the files and the Dockerfile changes, each with the bytes it saves.` -}}

groups:
  - name: imagebloat-images
    rules:
      {{- with $a.oversizedImage }}
      {{- if .enabled }}
      - alert: ImageBloatOversizedImage
        expr: |
          max by ({{ $by }}) (imagebloat_image_pull_bytes) > {{ int64 .pullBytes }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A container image is larger to pull than {{ include "imagebloat.humanBytes" .pullBytes }}.
          description: >-
            {{ $workload }} runs an image of {{ `{{ $value | humanize1024 }}` }}B to pull, more than
            {{ include "imagebloat.humanBytes" .pullBytes }}: every node that starts it downloads that much, which slows
            scale-ups and rollouts. {{ $report }}
          runbook_url: {{ $r.runbookUrl }}#imagebloatoversizedimage
      {{- end }}
      {{- end }}
      {{- with $a.highlyReclaimable }}
      {{- if .enabled }}
      - alert: ImageBloatHighlyReclaimable
        expr: |
          max by ({{ $by }}) (imagebloat_image_reclaimable_bytes) > {{ int64 .reclaimableBytes }}
          and
          (
            max by ({{ $by }}) (imagebloat_image_reclaimable_bytes)
            /
            max by ({{ $by }}) (imagebloat_image_size_bytes)
          ) > {{ .reclaimableRatio }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A container image ships many bytes it does not need.
          description: >-
            {{ $workload }} could be {{ `{{ $value | humanize1024 }}` }}B smaller (files hidden by later
            layers plus caches, docs, build tools and other junk): more than
            {{ include "imagebloat.humanBytes" .reclaimableBytes }} and more than {{ include "imagebloat.percent" .reclaimableRatio }} of what it ships.
            {{ $report }}
          runbook_url: {{ $r.runbookUrl }}#imagebloathighlyreclaimable
      {{- end }}
      {{- end }}
      {{- with $a.lowEfficiency }}
      {{- if .enabled }}
      - alert: ImageBloatLowEfficiency
        expr: |
          min by ({{ $by }}) (imagebloat_image_efficiency_ratio) < {{ .efficiencyRatio }}
          {{- if gt (float64 .minSizeBytes) 0.0 }}
          and
          max by ({{ $by }}) (imagebloat_image_size_bytes) > {{ int64 .minSizeBytes }}
          {{- end }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A container image ships files that later layers hide.
          description: >-
            Only {{ `{{ $value | humanizePercentage }}` }} of the bytes that {{ $workload }} ships
            reach its final filesystem (threshold {{ include "imagebloat.percent" .efficiencyRatio }}): the rest is overwritten or
            deleted by later layers, and still downloaded and stored. {{ $report }}
          runbook_url: {{ $r.runbookUrl }}#imagebloatlowefficiency
      {{- end }}
      {{- end }}
      {{- with $a.imageGrew }}
      {{- if .enabled }}
      - alert: ImageBloatImageGrew
        expr: |
          (
            max by ({{ $by }}) (imagebloat_image_pull_growth_bytes)
            /
            (
              max by ({{ $by }}) (imagebloat_image_pull_bytes)
              -
              max by ({{ $by }}) (imagebloat_image_pull_growth_bytes)
            )
          ) > {{ .growthRatio }}
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: A container's new image is much larger to pull than the one it replaced.
          description: >-
            {{ $workload }} runs an image that is {{ `{{ $value | humanizePercentage }}` }} larger to
            pull than the image it ran before (threshold {{ include "imagebloat.percent" .growthRatio }}): every node that
            starts it downloads that much more. The ImageGrew Event on the workload and the
            container's previous entry in its ImageReport (kubectl get imagereport -n
            {{ `{{ $labels.namespace }}` }} {{ `{{ $labels.workload_kind | toLower }}-{{ $labels.workload }}` }} -o yaml)
            give both images' figures; the report's recommendations say what to cut.
          runbook_url: {{ $r.runbookUrl }}#imagebloatimagegrew
      {{- end }}
      {{- end }}
  - name: imagebloat-operator
    rules:
      {{- with $a.analysesFailing }}
      {{- if .enabled }}
      - alert: ImageBloatAnalysesFailing
        expr: |
          sum by (namespace, job) (increase(imagebloat_analyses_total{result="error"}[{{ .window }}])) > 0
          or
          sum by (namespace, job) (increase(imagebloat_reconcile_errors_total[{{ .window }}])) > 0
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: imagebloat keeps failing to analyze images or to write reports.
          description: >-
            {{ `{{ $labels.job }}` }} failed {{ `{{ $value | humanize }}` }} times in the last {{ .window }}, and has
            kept failing for {{ .for }} (imagebloat_analyses_total{result="error"}, or
            imagebloat_reconcile_errors_total): reports of the affected workloads are missing or
            stale. The Ready condition of their ImageReports names the reason (kubectl get
            imagereports -A -o wide); the operator's log has the details.
          runbook_url: {{ $r.runbookUrl }}#imagebloatanalysesfailing
      {{- end }}
      {{- end }}
      {{- with $a.operatorAbsent }}
      {{- if .enabled }}
      - alert: ImageBloatOperatorAbsent
        expr: |
          absent(up{ {{- $r.operatorJobSelector -}} } == 1)
        for: {{ .for }}
        labels:
          severity: {{ .severity }}
          {{- with $extra }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        annotations:
          summary: The imagebloat operator has disappeared from Prometheus target discovery or is down.
          description: >-
            No target matching up{ {{- $r.operatorJobSelector -}} } has been up for {{ .for }}: ImageReports
            and imagebloat metrics are not being updated.
          runbook_url: {{ $r.runbookUrl }}#imagebloatoperatorabsent
      {{- end }}
      {{- end }}
{{- end }}
