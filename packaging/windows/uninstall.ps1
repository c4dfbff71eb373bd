# Removes what install.ps1 added: the scheduled task, the programs, and the PATH entry.
# The password stays in Windows Credential Manager until `kubex-cred logout` (run that first).
$ErrorActionPreference = 'Stop'
$target = Join-Path $env:LOCALAPPDATA 'Programs\kubex-cred'

if (Get-ScheduledTask -TaskName 'kubex-cred' -ErrorAction SilentlyContinue) {
    Stop-ScheduledTask -TaskName 'kubex-cred' -ErrorAction SilentlyContinue
    Unregister-ScheduledTask -TaskName 'kubex-cred' -Confirm:$false
}
$front = Join-Path $target 'kubex-cred.exe'
if (Test-Path $front) { & $front stop 2>$null | Out-Null }
if (Test-Path $target) { Remove-Item -Recurse -Force $target }

$userPath = [Environment]::GetEnvironmentVariable('Path', 'User')
$kept = ($userPath -split ';') | Where-Object { $_ -and $_ -ne $target }
[Environment]::SetEnvironmentVariable('Path', ($kept -join ';'), 'User')
Write-Output "kubex-cred removed."
